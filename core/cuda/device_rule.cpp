#include "device_rule.h"

#include <algorithm>

namespace kvc::cuda {

void RuleData::bind_host() {
  rule.separators = separators.empty() ? nullptr : separators.data();
  rule.n_separators = static_cast<int32_t>(separators.size());
  rule.score_layers = score_layers.empty() ? nullptr : score_layers.data();
  rule.n_score_layers = static_cast<int32_t>(score_layers.size());
  rule.layer_heavy = has_layer_heavy ? layer_heavy.data() : nullptr;
  rule.n_layer_heavy = static_cast<int32_t>(layer_heavy.size());
}

RuleData make_rule_data(const kvc_rule& r, int64_t trigger_size, int32_t n_layers,
                        int32_t n_heads) {
  RuleData d;
  rule_math::Rule& m = d.rule;
  m.sink = r.sink_size;
  m.recent = r.recent_size;
  m.separator = r.separator_size;
  m.heavy = r.heavy_size;
  m.scope = r.scope;
  m.smallest = r.heavy_order == KVC_ORDER_SMALLEST;
  m.pooling = r.pooling;
  m.pool_kernel = r.pool_kernel;
  m.has_tie = r.tie_signal != 0;
  m.adaptive = r.allocation == KVC_ALLOCATION_ADAPTIVE;
  m.allocation_floor = r.allocation_floor;
  m.update_interval = r.update_interval;
  m.trigger_size = trigger_size;
  m.n_layers = n_layers;
  m.n_heads = n_heads;
  if (r.separator_size > 0 && r.separator_ids != nullptr) {
    d.separators.assign(r.separator_ids, r.separator_ids + r.n_separator_ids);
    std::sort(d.separators.begin(), d.separators.end());
    d.separators.erase(std::unique(d.separators.begin(), d.separators.end()),
                       d.separators.end());
  }
  if (r.score_layers != nullptr && r.n_score_layers > 0)
    d.score_layers.assign(r.score_layers, r.score_layers + r.n_score_layers);
  else
    for (int32_t l = 0; l < n_layers; ++l) d.score_layers.push_back(l);
  if (r.layer_heavy_sizes != nullptr) {
    d.has_layer_heavy = true;
    d.layer_heavy.assign(r.layer_heavy_sizes, r.layer_heavy_sizes + r.n_layer_heavy_sizes);
  }
  d.bind_host();
  return d;
}

int64_t scratch_stride(int64_t max_entries) {
  return rule_math::pow2_at_least(std::max<int64_t>(max_entries, 1));
}

void HostScratch::size_for(int64_t groups, int32_t n_layers, int32_t n_heads,
                           int64_t max_entries) {
  const int64_t stride = scratch_stride(max_entries);
  const int64_t pool_stride = rule_math::pow2_at_least(std::max<int64_t>(n_heads, 1) * stride);
  const auto G = static_cast<size_t>(groups);
  raw.assign(G * stride, 0.0);
  score.assign(G * stride, 0.0);
  tie.assign(G * stride, 0.0);
  keep.assign(G * stride, 0);
  idx.assign(G * stride, -1);
  pool.assign(static_cast<size_t>(std::max(n_layers, 1)) * pool_stride, -1);
  layouts.assign(G, {});
  view.raw = raw.data();
  view.score = score.data();
  view.tie = tie.data();
  view.keep = keep.data();
  view.idx = idx.data();
  view.pool = pool.data();
  view.layouts = layouts.data();
  view.stride = stride;
  view.idx_stride = stride;
  view.pool_stride = pool_stride;
}

}  // namespace kvc::cuda
