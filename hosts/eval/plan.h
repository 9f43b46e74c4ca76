// kvc-eval's runs, resolved and validated from the settings before anything is loaded: which
// policies under which protocols, the budget sweep's scaled runs (planned once the model is
// loaded: their sizes depend on the capacity the library reports), and the warnings for flags
// no run uses.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "budgets.h"
#include "options.h"
#include "runtime.h"
#include "scoring.h"

namespace kvc::hosts {

struct PlannedRun {
  EvalRun run;
  std::optional<int64_t> budget;  // --budgets: the scaled run of this budget
  int64_t capacity = -1;          // --budgets: the capacity the scaled policy reaches
  std::vector<ParamOverride> scaled_sizes;
};

struct Plan {
  std::vector<PlannedRun> runs;
  ProtocolSettings protocols;
  bool all = false;  // --mode all: also the summary table
  std::vector<int64_t> budgets;
  std::vector<std::string> sweep_modes;  // the policy modes the budgets apply to
  bool compare = false;                  // --compare_to dense
};

// The runs of the settings, in the order they run (the seed's). Warnings (flags no run uses,
// seed flags a policy lacks) are appended to `warnings`.
Plan plan_runs(const Options& options, const PolicyCatalog& catalog,
               std::vector<std::string>& warnings);

// Replaces the sweep's placeholder with one run per (mode, budget).
void plan_sweep(Plan& plan, const Options& options, const PolicyCatalog& catalog,
                kvc_model* model, std::vector<std::string>& warnings);

}  // namespace kvc::hosts
