// Budget sweeps (--budgets): each policy's sizes scaled so that its cache holds a given number
// of entries per (layer, head), the x axis of the quality-against-budget figure.
//
// The rule (docs/hosts.md, "Budget sweeps"): the parameters named in budget_parameters() that
// the policy has are multiplied by one factor f and rounded to the nearest integer (a size that
// was positive stays at least 1); every other parameter (start_size, windows, kernel sizes,
// intervals) keeps its value. f is the largest factor for which the capacity the library reports
// for the policy is at most the budget; when rounding cannot hit the budget exactly, the
// capacity reached is recorded and a warning says so.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "options.h"
#include "runtime.h"

namespace kvc::hosts {

// recent_size, heavy_size, separator_size, local_size, budget, cache_size.
const std::vector<std::string>& budget_parameters();

struct BudgetRun {
  RunSpec spec;
  int64_t budget = 0;
  int64_t capacity = 0;  // what the library reports for the scaled policy
  std::vector<ParamOverride> sizes;
};

// The run of `mode` scaled to `budget`; nullopt for a policy without a bounded capacity or
// without any scaled parameter (the full cache). UsageError when the budget is smaller than the
// policy's fixed part.
std::optional<BudgetRun> scale_to_budget(const Options& options, const PolicyCatalog& catalog,
                                         const std::string& mode, kvc_model* model,
                                         int64_t budget, bool strict,
                                         std::vector<std::string>* warnings);

}  // namespace kvc::hosts
