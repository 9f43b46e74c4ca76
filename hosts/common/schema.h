// The settings of kvc-eval and kvc-bench: flags, TOML keys and defaults in one table.
#pragma once

#include <string>
#include <vector>

#include "options.h"

namespace kvc::hosts {

enum class Program { Eval, Bench, Generate };

// The embedded model and held-out text the programs use when no path is given.
inline constexpr const char* kDefaultModel = "models/kjv-mini";
inline constexpr const char* kDefaultDataDir = "data/kjv/eval";

// Builds the registry for one program, filled with the defaults. Both programs accept every
// TOML table ([model], [policy], [eval], [bench]) so one config file can serve both; only the
// program's own settings have command-line flags.
Options make_options(Program program);

// The seed's size flags that map onto policy parameters of the same name ([policy] keys).
const std::vector<std::string>& seed_policy_keys();

}  // namespace kvc::hosts
