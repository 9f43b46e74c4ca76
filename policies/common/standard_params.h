// The parameters the bundled policies share, with the seed project's defaults: one definition
// each, so that names, ranges and help read the same in every policy's schema, and the reading
// of the scope and separator parameters in one place.
#pragma once

#include <kvc/policy.hpp>

#include <string_view>
#include <vector>

namespace kvc::bundled {

inline constexpr double kMaxSize = 1e9;          // sizes are entry counts
inline constexpr double kMaxId = 2147483647.0;   // token ids

constexpr kvc_param_info size_param(const char* name, const char* default_value,
                                    double min_value, const char* help) {
  return sdk::int_param(name, default_value, min_value, kMaxSize, help);
}

inline constexpr kvc_param_info kStartSize =
    size_param("start_size", "4", 0, "Initial entries always kept (attention sinks)");
inline constexpr kvc_param_info kRecentSize =
    size_param("recent_size", "252", 0, "Most recent entries kept");
inline constexpr kvc_param_info kLocalSize =
    size_param("local_size", "256", 0, "Most recent entries kept");
inline constexpr kvc_param_info kHeavySize = size_param(
    "heavy_size", "128", 0, "Middle entries kept by accumulated attention (heavy hitters)");
inline constexpr kvc_param_info kSeparatorSize =
    size_param("separator_size", "64", 0, "Most recent separator entries of the middle kept");
inline constexpr kvc_param_info kScope = sdk::choice_param(
    "scope", "per_head", "per_head|shared",
    "per_head: each (layer, head) ranks its own scores; shared: one set for all, scored by "
    "score_layers summed over heads (the seed project: shared, layer 0)");
inline constexpr kvc_param_info kScoreLayers = sdk::int_list_param(
    "score_layers", "0", 0, 65535, "Layers whose attention scores the shared scope sums over heads");
inline constexpr kvc_param_info kSeparators = sdk::int_list_param(
    "separators", "", 0, kMaxId,
    "Separator token ids. With separator_strings, empty: the 20 default separators (SepLLM's "
    "punctuation, spaces and newlines, as strings through the model's tokenizer)");
inline constexpr kvc_param_info kSeparatorStrings = sdk::string_list_param(
    "separator_strings", "",
    "Separators as text, each mapped through the model's tokenizer alone and with a leading "
    "space (the variants that are one token count)");

// Ada-KV's allocation, an option of the rules that rank a per-head signal.
inline constexpr kvc_param_info kAllocation = sdk::choice_param(
    "allocation", "uniform", "uniform|adaptive",
    "uniform: every head keeps its own heavy budget; adaptive (Ada-KV): the heads of a layer "
    "share their heavy budgets by score, each keeping at least floor of its own");
inline constexpr kvc_param_info kFloor = sdk::float_param(
    "floor", "0.2", 0, 1,
    "allocation = adaptive: the share of its heavy budget each head keeps for itself");

// Applies `allocation` and `floor` to `rule`. Ada-KV splits a layer's budget between its heads,
// so it needs a per-head scope: `other_scope` names the parameter setting that chose another
// one ("scope = shared"), or is empty.
inline void allocation(sdk::Rule& rule, const sdk::Params& p, std::string_view other_scope) {
  if (p.get_choice("allocation") != "adaptive") return;
  sdk::require(other_scope.empty(), "allocation = adaptive needs per-head scores, but ",
               other_scope, " keeps one set per group of heads (use allocation = uniform)");
  rule.adaptive(p.get_float("floor"));
}

// SepLLM's streaming separators as strings: ". , ? ! ; :" alone and with a leading space,
// space, tab, newline, " \n", "\n ", " \n ", two and three spaces. Each is encoded alone
// (no leading-space variant): for the GPT-NeoX-20B tokenizer exactly the 20 ids of SepLLM.
inline const std::vector<std::string_view>& default_separator_strings() {
  static const std::vector<std::string_view> strings = {
      ".", ",", "?", "!", ";", ":", " .", " ,", " ?", " !", " ;", " :",
      " ", "\t", "\n", " \n", "\n ", " \n ", "  ", "   "};
  return strings;
}

// The scope parameters: `scope` and, for the shared scope, `score_layers`.
inline kvc_scope scope(const sdk::Params& p) {
  return p.get_choice("scope") == "shared" ? KVC_SCOPE_SHARED : KVC_SCOPE_PER_HEAD;
}
inline std::vector<std::int32_t> score_layers(const sdk::Host& host, const sdk::Params& p) {
  std::vector<std::int32_t> layers = p.get<std::vector<std::int32_t>>("score_layers");
  sdk::require(!layers.empty(), "score_layers must list at least one layer");
  for (size_t i = 0; i < layers.size(); ++i)
    sdk::require(std::find(layers.begin(), layers.begin() + i, layers[i]) == layers.begin() + i,
                 "score_layers: layer ", layers[i], " is listed twice");
  for (std::int32_t l : layers)
    sdk::require(host.n_layers() == 0 || l < host.n_layers(), "score_layers: layer ", l,
                 " does not exist (the model has ", host.n_layers(), " layers, 0..",
                 host.n_layers() - 1, ")");
  return layers;
}

// Separator ids: `separators` plus `separator_strings` mapped through the model's tokenizer
// (alone and with a leading space); with both empty, the default strings (alone). Ids must lie
// in the model's vocabulary. Strings need a tokenizer; when only checking parameters without
// a model there is none, and they are resolved when the session starts. Strings that are not
// one token are dropped and named in the policy report's notes.
inline std::vector<std::int32_t> separators(const sdk::Host& host, const sdk::Params& p) {
  std::vector<std::int32_t> ids = p.get<std::vector<std::int32_t>>("separators");
  for (std::int32_t id : ids)
    sdk::require(host.vocab_size() == 0 || id < host.vocab_size(), "separators: id ", id,
                 " is outside the model's vocabulary of ", host.vocab_size(), " ids (0..",
                 host.vocab_size() - 1, ")");
  std::vector<std::string_view> strings = p.get_strings("separator_strings");
  const bool defaults = ids.empty() && strings.empty();
  if (defaults) strings = default_separator_strings();
  if (strings.empty() || host.n_layers() == 0) return ids;  // no model: checked at session start
  sdk::require(host.has_tokenizer(),
               defaults ? "the default separators are strings, and this model has no tokenizer "
                          "(give token ids in 'separators')"
                        : "separator_strings needs the model's tokenizer, and this model has "
                          "none (give token ids in 'separators' instead)");
  std::vector<std::string> dropped;
  for (std::int32_t id : sdk::single_token_ids(host, strings, !defaults, &dropped))
    ids.push_back(id);
  for (const std::string& d : dropped) {
    std::string shown;
    for (char c : d) shown += c == '\n' ? "\\n" : c == '\t' ? "\\t" : std::string(1, c);
    host.note(std::string(defaults ? "default separator" : "separator string") + " \"" + shown +
              "\" is not one token under this tokenizer: dropped");
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

}  // namespace kvc::bundled
