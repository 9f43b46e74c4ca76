// pyramidkv (PyramidKV, Cai et al. 2024): SnapKV's rule with a heavy budget per layer that
// falls from the bottom layer to the top one. With H = heavy_size and n layers: min = H / beta,
// max = 2H - min, step = (max - min) / (n - 1) (integer division, as the PyramidKV and kvpress
// code), and layer l keeps max - l * step. A rule: the engine runs it and never calls back.
#include "snap_params.h"

namespace {

using namespace kvc::bundled;

class PyramidKV {
 public:
  static constexpr const char* name = "pyramidkv";
  static constexpr const char* version = KVC_POLICY_VERSION;
  static constexpr const char* description =
      "PyramidKV: SnapKV with heavy budgets decreasing from the bottom layer to the top";
  static constexpr kvc_param_info params[] = {
      kSnapWindow, kSnapKernel, kSnapPooling, kSnapStart, kSnapHeavy,
      size_param("beta", "20", 1, "The top layer keeps about heavy_size / beta middle entries"),
      kAllocation, kFloor,
  };

  PyramidKV(const kvc::sdk::Host& host, const kvc::sdk::Params& p, kvc_policy_setup& setup) {
    snap_rule(rule_, p);
    const std::int64_t n = host.n_layers();  // 0 when checked without a model
    if (n > 0) rule_.layer_heavy(budgets(p.get_int("heavy_size"), p.get_int("beta"), n));
    allocation(rule_, p, "");
    rule_.finish(setup);
  }

  static std::vector<std::int64_t> budgets(std::int64_t heavy, std::int64_t beta,
                                           std::int64_t n) {
    if (n == 1) return {heavy};
    const std::int64_t lo = heavy / beta, hi = 2 * heavy - lo, step = (hi - lo) / (n - 1);
    std::vector<std::int64_t> out;
    for (std::int64_t l = 0; l < n; ++l) out.push_back(hi - l * step);
    return out;
  }

 private:
  kvc::sdk::Rule rule_;
};

}  // namespace

KVC_SDK_POLICY(PyramidKV)
