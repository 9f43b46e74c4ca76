#include "budgets.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kvc::hosts {

const std::vector<std::string>& budget_parameters() {
  static const std::vector<std::string> names = {"recent_size",    "heavy_size",
                                                 "separator_size", "local_size",
                                                 "budget",         "cache_size"};
  return names;
}

namespace {

int64_t capacity_of(kvc_model* model, const RunSpec& spec) {
  SessionPtr session = make_session(model, spec, 0);
  return policy_report(session.get()).value("capacity", int64_t{-1});
}

}  // namespace

std::optional<BudgetRun> scale_to_budget(const Options& options, const PolicyCatalog& catalog,
                                         const std::string& mode, kvc_model* model,
                                         int64_t budget, bool strict,
                                         std::vector<std::string>* warnings) {
  RunSpec base = make_run(options, catalog, mode, strict, warnings);
  const int64_t base_capacity = capacity_of(model, base);
  const auto params = base.params_json();
  std::vector<std::pair<std::string, int64_t>> scaled;
  for (const auto& name : budget_parameters())
    if (params.contains(name) && params[name].is_number_integer())
      scaled.emplace_back(name, params[name].get<int64_t>());
  if (base_capacity < 0 || scaled.empty()) return std::nullopt;

  const std::string origin = "--budgets " + std::to_string(budget);
  auto sizes_at = [&](double f) {
    std::vector<ParamOverride> sizes;
    for (const auto& [name, value] : scaled) {
      int64_t v = std::llround(static_cast<double>(value) * f);
      if (value > 0) v = std::max<int64_t>(1, v);
      sizes.push_back({name, v, origin});
    }
    return sizes;
  };
  // The capacity at factor f; "too large" when the scaled sizes are not valid for the policy.
  constexpr int64_t kInvalid = std::numeric_limits<int64_t>::max();
  auto try_at = [&](double f, RunSpec* out) -> int64_t {
    try {
      RunSpec spec = make_run(options, catalog, mode, false, nullptr, sizes_at(f));
      const int64_t c = capacity_of(model, spec);
      if (out) *out = std::move(spec);
      return c;
    } catch (const UsageError&) {
      return kInvalid;
    } catch (const RunError&) {
      return kInvalid;
    }
  };
  // Some factors give sizes the policy rejects (sepllm needs its sizes below cache_size), so
  // first find a valid factor within the budget on a halving grid, then bisect up from it.
  double hi = std::max(1.0, 2.0 * static_cast<double>(budget) /
                                static_cast<double>(std::max<int64_t>(1, base_capacity)));
  for (int i = 0; i < 40 && try_at(hi, nullptr) <= budget; ++i) hi *= 2;
  double lo = -1;
  int64_t smallest = kInvalid;
  for (double f = hi; f > 1e-6; f *= 0.5) {
    const int64_t c = try_at(f, nullptr);
    if (c != kInvalid) smallest = std::min(smallest, c);
    if (c <= budget) {
      lo = f;
      break;
    }
    hi = f;
  }
  if (lo < 0)
    throw UsageError(origin + ": mode '" + mode + "' cannot hold fewer than " +
                     (smallest == kInvalid ? std::string("its fixed sizes")
                                           : std::to_string(smallest)) +
                     " entries (start_size and windows do not scale)");
  BudgetRun run;
  run.budget = budget;
  for (int i = 0; i < 40; ++i) {
    const double mid = 0.5 * (lo + hi);
    if (try_at(mid, nullptr) <= budget) lo = mid; else hi = mid;
  }
  run.capacity = try_at(lo, &run.spec);
  run.sizes = sizes_at(lo);
  run.spec.mode = mode;
  if (run.capacity != budget && warnings)
    warnings->push_back(origin + ": mode '" + mode + "' reaches a capacity of " +
                        std::to_string(run.capacity) + " entries, the closest below the budget");
  return run;
}

}  // namespace kvc::hosts
