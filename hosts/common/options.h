// Settings of the host programs: one typed registry filled from defaults, then a TOML config
// file, then the command line (each later source overrides the earlier ones).
//
// Every setting has a TOML home ([model], [policy], [eval], [bench]) and, for the programs that
// expose it, a command-line flag. The command line follows Python's argparse conventions so the
// seed project's commands work unchanged: `--flag value` and `--flag=value`, list flags take
// several values (`--seq_lengths 256 512 1024`), boolean flags take no value.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <toml++/toml.h>

namespace kvc::hosts {

// Bad flags, bad values, bad config files. Programs print it and exit with status 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A failure while running (missing model, empty data folder, engine errors). Exit status 1.
class RunError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Kind {
  Int,       // integer within [min, max]; "None" allowed when `nullable`
  Float,
  String,
  Bool,      // on the command line a bare flag means true; `--flag=false` is accepted
  IntList,   // several values: `--seq_lengths 256 512` or `--seq_lengths=256,512`
  PathList,  // several paths: `--merge a b` (a TOML array of strings)
  Choice,    // one of `choices`
  ParamList  // repeatable NAME=VALUE pairs (policy parameters)
};

enum class Source { Default, Config, CommandLine };

using Value = std::variant<std::monostate, bool, int64_t, double, std::string,
                           std::vector<int64_t>, std::vector<std::pair<std::string, std::string>>,
                           std::vector<std::string>>;

// A policy parameter as its source gave it, handed to the library without a text round trip:
// text in the kvc_param syntax (a command-line NAME=VALUE, or a TOML string) or a typed TOML
// value (an empty TOML array is the text "": an empty list of either kind).
using ParamValue = std::variant<std::string, int64_t, double, bool, std::vector<int64_t>,
                                std::vector<std::string>>;

struct PolicyParam {
  std::string name;
  ParamValue value;
  Source source = Source::Default;
  std::string origin;  // where it was given: "--param heavy_size=64", "c.toml:4:1"
};

struct Option {
  std::string section;  // TOML table: "model", "policy", "eval", "bench"
  std::string key;      // TOML key
  std::string flag;     // command-line name without "--"; empty = TOML only for this program
  Kind kind = Kind::String;
  Value value;          // the default until overridden
  std::string help;
  std::vector<std::string> choices;
  int64_t min = INT64_MIN;
  int64_t max = INT64_MAX;
  bool nullable = false;  // value may be None (std::monostate)
  Source source = Source::Default;
};

// Formats a value for messages, help and JSON-free text output ("None", "256 512", "true").
std::string to_text(const Value& value);
std::string to_text(const ParamValue& value);

class Options {
 public:
  // `program` names the program in messages; `sections` are the TOML tables it accepts.
  Options(std::string program, std::vector<std::string> sections);

  Option& add(Option option);  // the reference is valid until the next add

  // Parses argv (argv[0] skipped). Returns false when --help/--version was handled (printed).
  // `--config FILE` is loaded before the other flags are applied, so flags override it.
  bool parse(int argc, const char* const* argv);
  bool parse(const std::vector<std::string>& args);

  // Loads a TOML file (also used by parse for --config). Values set from the command line
  // are not overwritten. Unknown tables/keys and wrong types are UsageErrors naming them.
  void load_toml_file(const std::string& path);
  void load_toml_string(const std::string& text, const std::string& origin);

  const Option& get(const std::string& section, const std::string& key) const;
  Source source(const std::string& section, const std::string& key) const;
  bool is_set(const std::string& section, const std::string& key) const {
    return source(section, key) != Source::Default;
  }
  // How the user gave a setting, for messages: "--output_dir" (a flag or the default) or
  // "[eval] output_dir in c.toml" (the config file).
  std::string origin(const std::string& section, const std::string& key) const;
  int64_t get_int(const std::string& section, const std::string& key) const;
  std::optional<int64_t> get_opt_int(const std::string& section, const std::string& key) const;
  double get_float(const std::string& section, const std::string& key) const;
  bool get_bool(const std::string& section, const std::string& key) const;
  std::string get_string(const std::string& section, const std::string& key) const;
  std::optional<std::string> get_opt_string(const std::string& section,
                                            const std::string& key) const;
  std::vector<int64_t> get_int_list(const std::string& section, const std::string& key) const;
  std::vector<std::string> get_path_list(const std::string& section, const std::string& key) const;

  // Policy parameters that are not one of the registered [policy] keys: the other keys of
  // the config's [policy] table, then `--param NAME=VALUE` flags (a flag replaces the
  // config's value of the same name; one name given twice on the command line is an error).
  const std::vector<PolicyParam>& extra_policy_params() const { return extra_params_; }
  // The parameters of one mode only: a config's [policy.<mode>] table (e.g. [policy.snapkv]
  // heavy_size = 348). They take precedence over the [policy] table, not over the command line.
  const std::vector<PolicyParam>& mode_policy_params(const std::string& mode) const {
    static const std::vector<PolicyParam> none;
    auto it = mode_params_.find(mode);
    return it == mode_params_.end() ? none : it->second;
  }
  std::vector<std::string> modes_with_params() const {
    std::vector<std::string> modes;
    for (const auto& [mode, params] : mode_params_) modes.push_back(mode);
    return modes;
  }

  std::string help_text(const std::string& synopsis) const;
  const std::string& program() const { return program_; }
  const std::vector<Option>& options() const { return options_; }
  const std::string& config_path() const { return config_path_; }

 private:
  Option* find(const std::string& section, const std::string& key);
  Option* find_flag(const std::string& flag);
  void set_from_text(Option& option, const std::string& text, const std::string& where);
  void apply_toml(const toml::table& root, const std::string& origin);
  void set_extra_param(PolicyParam param);

  std::string program_;
  std::vector<std::string> sections_;
  std::vector<Option> options_;
  std::vector<PolicyParam> extra_params_;
  std::map<std::string, std::vector<PolicyParam>> mode_params_;
  std::string config_path_;
};

// Closest candidate by edit distance (for "did you mean" hints); empty if none is close.
std::string closest(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace kvc::hosts
