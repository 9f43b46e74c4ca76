// What snapkv and pyramidkv share: SnapKV's parameters and its rule (sinks, the observation
// window of the last `window` queries kept whole, and the middle ranked by the attention
// those queries gave it, pooled over neighbouring entries).
#pragma once

#include "standard_params.h"

namespace kvc::bundled {

inline constexpr double kMaxWindow = 65536;  // the engine's largest signal window

inline constexpr kvc_param_info kSnapWindow = sdk::int_param(
    "window", "32", 1, kMaxWindow,
    "Observation window: the last `window` queries score the middle, and the last `window` "
    "entries are kept");
inline constexpr kvc_param_info kSnapKernel = size_param(
    "kernel_size", "5", 1, "Pooling width over neighbouring entries (odd; 1: no pooling)");
inline constexpr kvc_param_info kSnapPooling = sdk::choice_param(
    "pooling", "avg", "avg|max",
    "avg: sum of the kernel_size neighbours / kernel_size (kvpress); max: their largest (the "
    "paper)");
inline constexpr kvc_param_info kSnapStart =
    size_param("start_size", "0", 0, "Initial entries always kept (attention sinks)");
inline constexpr kvc_param_info kSnapHeavy =
    size_param("heavy_size", "224", 0, "Middle entries kept by pooled window attention");

// The rule of SnapKV with `p`'s parameters (heavy budgets and allocation are the caller's).
inline sdk::Rule& snap_rule(sdk::Rule& rule, const sdk::Params& p) {
  const std::int64_t window = p.get_int("window"), kernel = p.get_int("kernel_size");
  sdk::require(kernel % 2 == 1, "kernel_size ", kernel,
               " must be odd (the pooling window is centred on each entry)");
  rule.sinks(p.get_int("start_size")).recent(window).window(window);
  rule.heavy(p.get_int("heavy_size"), KVC_SIGNAL_WINDOW_ATTENTION);
  rule.pool(p.get_choice("pooling") == "max" ? KVC_POOLING_MAX : KVC_POOLING_AVG, kernel);
  return rule;
}

}  // namespace kvc::bundled
