#include "modes.h"

namespace kvc::hosts {

const std::vector<Mode>& known_modes() {
  static const std::vector<Mode> modes = {
      {"baseline", "baseline", {}, "", {}},
      {"streaming", "streaming", {}, "", {}},
      {"h2o", "h2o", {}, "", {}},
      {"lazy_h2o", "lazy_h2o", {}, "", {}},
      {"sepllm", "sepllm", {}, "", {}},
      // The seed's --update_interval is for its lazy methods only.
      {"unified",
       "unified",
       {},
       "",
       {{"update_interval", "it is for the lazy modes (use --mode lazy_unified, or --param "
                            "update_interval=N)"}}},
      {"lazy_unified", "unified", {{"update_interval", "10"}},
       "The seed's lazy_unified: unified with the lazy refresh (update_interval 10)", {}},
      // The methods beyond the seed (docs/policies.md), after the seed's.
      {"tova", "tova", {}, "", {}},
      {"snapkv", "snapkv", {}, "", {}},
      {"pyramidkv", "pyramidkv", {}, "", {}},
      {"knorm", "knorm", {}, "", {}},
      {"keydiff", "keydiff", {}, "", {}},
      {"scissorhands", "scissorhands", {}, "", {}},
  };
  return modes;
}

const Mode* find_mode(const std::string& name) {
  for (const Mode& m : known_modes())
    if (m.name == name) return &m;
  return nullptr;
}

}  // namespace kvc::hosts
