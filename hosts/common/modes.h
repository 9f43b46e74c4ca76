// The one table of mode names: the seed's methods in the seed's order (the order of --mode all
// and of the results tables), and the modes that are a policy with preset parameters. Nothing
// else in the hosts knows a policy by name.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace kvc::hosts {

struct Mode {
  std::string name;    // what --mode takes
  std::string policy;  // the plugin it runs
  // Parameter values the mode presets, in the kvc_param text syntax; any source the user gives
  // (flag, --param, config) replaces them.
  std::vector<std::pair<std::string, std::string>> presets;
  std::string description;  // for --list_policies (empty: the policy's own)
  // Seed flags that do not reach this mode although its policy has the parameter, with why.
  std::vector<std::pair<std::string, std::string>> ignored_flags;
};

const std::vector<Mode>& known_modes();
// The table's entry of `name`, or nullptr.
const Mode* find_mode(const std::string& name);

}  // namespace kvc::hosts
