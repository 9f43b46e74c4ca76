#include "options.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>

#include <toml++/toml.h>

namespace kvc::hosts {
namespace {

std::string join(const std::vector<std::string>& items, const std::string& separator) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += separator;
    out += items[i];
  }
  return out;
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

std::optional<int64_t> parse_int(const std::string& text) {
  int64_t value = 0;
  const char* begin = text.data();
  const char* end = begin + text.size();
  if (begin != end && *begin == '+') ++begin;
  auto [ptr, ec] = std::from_chars(begin, end, value);
  if (ec != std::errc() || ptr != end || begin == end) return std::nullopt;
  return value;
}

std::optional<double> parse_float(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  double value = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || errno == ERANGE || !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

std::optional<bool> parse_bool(const std::string& text) {
  std::string t = text;
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  if (t == "true" || t == "1" || t == "yes" || t == "on") return true;
  if (t == "false" || t == "0" || t == "no" || t == "off") return false;
  return std::nullopt;
}

std::string range_text(const Option& o) {
  if (o.min != INT64_MIN && o.max != INT64_MAX) {
    return " between " + std::to_string(o.min) + " and " + std::to_string(o.max);
  }
  if (o.min != INT64_MIN) return " >= " + std::to_string(o.min);
  if (o.max != INT64_MAX) return " <= " + std::to_string(o.max);
  return "";
}

std::string kind_text(const Option& o) {
  switch (o.kind) {
    case Kind::Int: return "an integer" + range_text(o) + (o.nullable ? " (or None)" : "");
    case Kind::Float: return "a number";
    case Kind::String: return "a string";
    case Kind::Bool: return "true or false";
    case Kind::IntList: return "one or more integers" + range_text(o);
    case Kind::PathList: return "one or more paths";
    case Kind::Choice: return "one of: " + join(o.choices, ", ");
    case Kind::ParamList: return "NAME=VALUE";
  }
  return "a value";
}

std::string toml_where(const std::string& origin, const toml::source_region& region) {
  std::string where = origin;
  if (region.begin.line) {
    where += ':';
    where += std::to_string(region.begin.line);
    where += ':';
    where += std::to_string(region.begin.column);
  }
  return where;
}

std::string toml_type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    default: return "nothing";
  }
}

std::string format_double(double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.17g", value);
  // Shortest text that reads back exactly, so "0.5" stays "0.5".
  for (int precision = 1; precision <= 17; ++precision) {
    char candidate[64];
    std::snprintf(candidate, sizeof candidate, "%.*g", precision, value);
    if (std::strtod(candidate, nullptr) == value) return candidate;
  }
  return buffer;
}

// A TOML value of an unregistered [policy] key, typed as TOML typed it.
std::optional<ParamValue> toml_to_param(const toml::node& node) {
  if (auto v = node.as_integer()) return ParamValue(v->get());
  if (auto v = node.as_floating_point()) return ParamValue(v->get());
  if (auto v = node.as_boolean()) return ParamValue(v->get());
  if (auto v = node.as_string()) return ParamValue(v->get());
  if (auto a = node.as_array()) {
    if (a->empty()) return ParamValue(std::string());
    if (a->is_homogeneous(toml::node_type::integer)) {
      std::vector<int64_t> items;
      for (const auto& item : *a) items.push_back(item.as_integer()->get());
      return ParamValue(std::move(items));
    }
    if (a->is_homogeneous(toml::node_type::string)) {
      std::vector<std::string> items;
      for (const auto& item : *a) items.push_back(item.as_string()->get());
      return ParamValue(std::move(items));
    }
  }
  return std::nullopt;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = up;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best;
}

std::string to_text(const ParamValue& value) {
  struct Visitor {
    std::string operator()(const std::string& s) const { return s; }
    std::string operator()(int64_t i) const { return std::to_string(i); }
    std::string operator()(double d) const { return format_double(d); }
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(const std::vector<int64_t>& list) const {
      std::vector<std::string> items;
      for (auto i : list) items.push_back(std::to_string(i));
      return "[" + join(items, ", ") + "]";
    }
    std::string operator()(const std::vector<std::string>& list) const {
      std::vector<std::string> items;
      for (const auto& i : list) items.push_back("\"" + i + "\"");
      return "[" + join(items, ", ") + "]";
    }
  };
  return std::visit(Visitor{}, value);
}

std::string to_text(const Value& value) {
  struct Visitor {
    std::string operator()(std::monostate) const { return "None"; }
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(int64_t i) const { return std::to_string(i); }
    std::string operator()(double d) const { return format_double(d); }
    std::string operator()(const std::string& s) const { return s; }
    std::string operator()(const std::vector<int64_t>& list) const {
      std::vector<std::string> items;
      for (auto i : list) items.push_back(std::to_string(i));
      return join(items, " ");
    }
    std::string operator()(const std::vector<std::pair<std::string, std::string>>& list) const {
      std::vector<std::string> items;
      for (const auto& [k, v] : list) items.push_back(k + "=" + v);
      return join(items, " ");
    }
    std::string operator()(const std::vector<std::string>& list) const { return join(list, " "); }
  };
  return std::visit(Visitor{}, value);
}

Options::Options(std::string program, std::vector<std::string> sections)
    : program_(std::move(program)), sections_(std::move(sections)) {}

Option& Options::add(Option option) { return options_.emplace_back(std::move(option)); }

Option* Options::find(const std::string& section, const std::string& key) {
  for (auto& o : options_) {
    if (o.section == section && o.key == key) return &o;
  }
  return nullptr;
}

Option* Options::find_flag(const std::string& flag) {
  for (auto& o : options_) {
    if (!o.flag.empty() && o.flag == flag) return &o;
  }
  return nullptr;
}

const Option& Options::get(const std::string& section, const std::string& key) const {
  for (const auto& o : options_) {
    if (o.section == section && o.key == key) return o;
  }
  throw std::logic_error("no option [" + section + "] " + key);
}

Source Options::source(const std::string& section, const std::string& key) const {
  return get(section, key).source;
}

std::string Options::origin(const std::string& section, const std::string& key) const {
  const Option& o = get(section, key);
  if (o.source == Source::Config || o.flag.empty())
    return "[" + section + "] " + key + (config_path_.empty() ? "" : " in " + config_path_);
  return "--" + o.flag;
}

int64_t Options::get_int(const std::string& section, const std::string& key) const {
  return std::get<int64_t>(get(section, key).value);
}

std::optional<int64_t> Options::get_opt_int(const std::string& section,
                                            const std::string& key) const {
  const auto& v = get(section, key).value;
  if (std::holds_alternative<std::monostate>(v)) return std::nullopt;
  return std::get<int64_t>(v);
}

double Options::get_float(const std::string& section, const std::string& key) const {
  return std::get<double>(get(section, key).value);
}

bool Options::get_bool(const std::string& section, const std::string& key) const {
  return std::get<bool>(get(section, key).value);
}

std::string Options::get_string(const std::string& section, const std::string& key) const {
  return std::get<std::string>(get(section, key).value);
}

std::optional<std::string> Options::get_opt_string(const std::string& section,
                                                   const std::string& key) const {
  const auto& v = get(section, key).value;
  if (std::holds_alternative<std::monostate>(v)) return std::nullopt;
  return std::get<std::string>(v);
}

std::vector<int64_t> Options::get_int_list(const std::string& section,
                                           const std::string& key) const {
  return std::get<std::vector<int64_t>>(get(section, key).value);
}

std::vector<std::string> Options::get_path_list(const std::string& section,
                                                const std::string& key) const {
  return std::get<std::vector<std::string>>(get(section, key).value);
}

void Options::set_extra_param(PolicyParam param) {
  for (auto& p : extra_params_) {
    if (p.name != param.name) continue;
    if (p.source == Source::CommandLine && param.source == Source::CommandLine)
      throw UsageError(param.origin + ": parameter '" + param.name + "' is already given by " +
                       p.origin + " (give it once)");
    if (param.source == Source::Config && p.source == Source::CommandLine) return;
    p = std::move(param);
    return;
  }
  extra_params_.push_back(std::move(param));
}

// Parses `text` for `option` (command-line syntax) and stores it with source CommandLine.
void Options::set_from_text(Option& o, const std::string& text, const std::string& where) {
  auto bad = [&](const std::string& got) {
    return UsageError(where + ": expected " + kind_text(o) + ", got '" + got + "'");
  };
  auto check_range = [&](int64_t v, const std::string& got) {
    if (v < o.min || v > o.max) throw bad(got);
  };
  switch (o.kind) {
    case Kind::Int: {
      if (o.nullable && (text == "None" || text == "none" || text == "null")) {
        o.value = std::monostate{};
        break;
      }
      auto v = parse_int(text);
      if (!v) throw bad(text);
      check_range(*v, text);
      o.value = *v;
      break;
    }
    case Kind::Float: {
      auto v = parse_float(text);
      if (!v) throw bad(text);
      o.value = *v;
      break;
    }
    case Kind::String:
      if (text.empty()) throw bad(text);
      o.value = text;
      break;
    case Kind::Bool: {
      auto v = parse_bool(text);
      if (!v) throw bad(text);
      o.value = *v;
      break;
    }
    case Kind::Choice:
      if (std::find(o.choices.begin(), o.choices.end(), text) == o.choices.end()) {
        std::string hint = closest(text, o.choices);
        throw UsageError(where + ": '" + text + "' is not one of: " + join(o.choices, ", ") +
                         (hint.empty() ? "" : " (did you mean '" + hint + "'?)"));
      }
      o.value = text;
      break;
    case Kind::IntList: {
      std::vector<int64_t> list;
      std::string item;
      std::stringstream stream(text);
      while (std::getline(stream, item, ',')) {
        if (item.empty()) continue;
        auto v = parse_int(item);
        if (!v) throw bad(item);
        check_range(*v, item);
        list.push_back(*v);
      }
      if (list.empty()) throw bad(text);
      o.value = list;
      break;
    }
    case Kind::PathList: {
      std::vector<std::string> list;
      std::string item;
      std::stringstream stream(text);
      while (std::getline(stream, item, '\n'))
        if (!item.empty()) list.push_back(item);
      if (list.empty()) throw bad(text);
      o.value = list;
      break;
    }
    case Kind::ParamList: {
      auto eq = text.find('=');
      if (eq == std::string::npos || eq == 0) throw bad(text);
      set_extra_param({text.substr(0, eq), text.substr(eq + 1), Source::CommandLine,
                       "--param " + text});
      break;
    }
  }
  o.source = Source::CommandLine;
}

bool Options::parse(int argc, const char* const* argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return parse(args);
}

bool Options::parse(const std::vector<std::string>& args) {
  std::vector<std::pair<Option*, std::string>> pending;
  std::string config;
  std::vector<std::string> flags;
  for (const auto& o : options_) {
    if (!o.flag.empty()) flags.push_back(o.flag);
  }
  flags.push_back("config");

  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "-h" || arg == "--help") return false;
    if (!starts_with(arg, "--") || arg.size() == 2) {
      throw UsageError("unexpected argument '" + arg + "' (flags start with --; see --help)");
    }
    std::string name = arg.substr(2);
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    // argparse also accepts dashes for underscores in some programs; accept both spellings.
    std::replace(name.begin(), name.end(), '-', '_');
    auto next_value = [&]() -> std::string {
      if (inline_value) return *inline_value;
      if (i + 1 >= args.size() || starts_with(args[i + 1], "--")) {
        throw UsageError("--" + name + " expects a value");
      }
      return args[++i];
    };
    if (name == "config") {
      if (!config.empty()) throw UsageError("--config is given twice ('" + config + "' and '" +
                                            next_value() + "'); give one file");
      config = next_value();
      continue;
    }
    Option* o = find_flag(name);
    if (!o) {
      std::string hint = closest(name, flags);
      throw UsageError("unknown flag --" + name +
                       (hint.empty() ? "" : " (did you mean --" + hint + "?)") + "; see --help");
    }
    switch (o->kind) {
      case Kind::Bool:
        pending.emplace_back(o, inline_value ? *inline_value : "true");
        break;
      case Kind::IntList: {
        std::string joined;
        if (inline_value) {
          joined = *inline_value;
        } else {
          while (i + 1 < args.size() && !starts_with(args[i + 1], "--")) {
            if (!joined.empty()) joined += ",";
            joined += args[++i];
          }
        }
        if (joined.empty()) throw UsageError("--" + name + " expects one or more values");
        pending.emplace_back(o, joined);
        break;
      }
      case Kind::PathList: {
        std::string joined = inline_value.value_or("");
        if (!inline_value)
          while (i + 1 < args.size() && !starts_with(args[i + 1], "--"))
            joined += (joined.empty() ? "" : "\n") + args[++i];
        if (joined.empty()) throw UsageError("--" + name + " expects one or more paths");
        pending.emplace_back(o, joined);
        break;
      }
      default:
        pending.emplace_back(o, next_value());
    }
  }
  // argparse would silently take the last of a repeated flag; a results tool must not guess.
  for (size_t i = 0; i < pending.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (pending[j].first != pending[i].first || pending[i].first->kind == Kind::ParamList)
        continue;
      const std::string flag = "--" + pending[i].first->flag;
      throw UsageError(flag + " is given twice (" + flag + " " + pending[j].second + " and " +
                       flag + " " + pending[i].second + "); give it once");
    }
  }
  if (!config.empty()) load_toml_file(config);
  for (auto& [o, text] : pending) set_from_text(*o, text, "--" + o->flag);
  return true;
}

void Options::load_toml_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw UsageError("config file '" + path + "' does not exist or is not a file");
  }
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    throw UsageError(toml_where(path, e.source()) + ": invalid TOML: " +
                     std::string(e.description()));
  }
  config_path_ = path;
  apply_toml(root, path);
}

void Options::load_toml_string(const std::string& text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    throw UsageError(toml_where(origin, e.source()) + ": invalid TOML: " +
                     std::string(e.description()));
  }
  apply_toml(root, origin);
}

void Options::apply_toml(const toml::table& root, const std::string& origin) {
  for (auto&& [section_key, section_node] : root) {
    const std::string section(section_key.str());
    const std::string where = toml_where(origin, section_node.source());
    auto* table = section_node.as_table();
    if (!table) {
      throw UsageError(where + ": key '" + section + "' is outside any table; expected tables " +
                       join(sections_, ", ") + " (e.g. [" + sections_.front() + "])");
    }
    if (std::find(sections_.begin(), sections_.end(), section) == sections_.end()) {
      std::string hint = closest(section, sections_);
      throw UsageError(where + ": unknown table [" + section + "]; allowed: " +
                       join(sections_, ", ") +
                       (hint.empty() ? "" : " (did you mean [" + hint + "]?)"));
    }
    for (auto&& entry : *table) {  // no structured binding: lambdas capture it (clang < 16)
      const auto& key_node = entry.first;
      auto& node = entry.second;
      const std::string key(key_node.str());
      const std::string at = toml_where(origin, node.source()) + ": [" + section + "] " + key;
      Option* o = find(section, key);
      if (!o || o->kind == Kind::ParamList) {
        if (section == "policy" && node.is_table()) {
          // [policy.<mode>]: parameters of that mode only.
          for (auto&& item : *node.as_table()) {
            const std::string name(item.first.str());
            const std::string item_at = toml_where(origin, item.second.source()) + ": [policy." +
                                        key + "] " + name;
            auto value = toml_to_param(item.second);
            if (!value)
              throw UsageError(item_at + ": a policy parameter must be a number, boolean, "
                                         "string or an array of integers or of strings, got " +
                               toml_type_name(item.second));
            mode_params_[key].push_back({name, std::move(*value), Source::Config,
                                         toml_where(origin, item.second.source()) +
                                             " [policy." + key + "]"});
          }
          continue;
        }
        if (section == "policy") {
          // Any other [policy] key is a parameter of the policy, checked against its schema.
          auto value = toml_to_param(node);
          if (!value) {
            throw UsageError(at + ": a policy parameter must be a number, boolean, string or "
                                  "an array of integers or of strings, got " +
                             toml_type_name(node) +
                             (node.is_array() ? " of mixed or nested items" : ""));
          }
          set_extra_param({key, std::move(*value), Source::Config,
                           toml_where(origin, node.source())});
          continue;
        }
        std::vector<std::string> keys;
        for (const auto& opt : options_) {
          if (opt.section == section && opt.kind != Kind::ParamList) keys.push_back(opt.key);
        }
        std::string hint = closest(key, keys);
        throw UsageError(toml_where(origin, node.source()) + ": unknown key '" + key + "' in [" +
                         section + "]" + (hint.empty() ? "" : " (did you mean '" + hint + "'?)") +
                         "; allowed: " + join(keys, ", "));
      }
      if (o->source == Source::CommandLine) continue;
      auto wrong = [&]() {
        return UsageError(at + ": expected " + kind_text(*o) + ", got " + toml_type_name(node));
      };
      auto in_range = [&](int64_t v) {
        if (v < o->min || v > o->max) {
          throw UsageError(at + ": expected " + kind_text(*o) + ", got " + std::to_string(v));
        }
      };
      switch (o->kind) {
        case Kind::Int: {
          auto v = node.as_integer();
          if (!v) throw wrong();
          in_range(v->get());
          o->value = v->get();
          break;
        }
        case Kind::Float:
          if (auto v = node.as_floating_point()) {
            o->value = v->get();
          } else if (auto i = node.as_integer()) {
            o->value = static_cast<double>(i->get());
          } else {
            throw wrong();
          }
          break;
        case Kind::String: {
          auto v = node.as_string();
          if (!v || v->get().empty()) throw wrong();
          o->value = v->get();
          break;
        }
        case Kind::Bool: {
          auto v = node.as_boolean();
          if (!v) throw wrong();
          o->value = v->get();
          break;
        }
        case Kind::Choice: {
          auto v = node.as_string();
          if (!v) throw wrong();
          set_from_text(*o, v->get(), at);
          break;
        }
        case Kind::IntList: {
          auto a = node.as_array();
          if (!a || a->empty()) throw wrong();
          std::vector<int64_t> list;
          for (const auto& item : *a) {
            auto v = item.as_integer();
            if (!v) {
              throw UsageError(at + ": expected " + kind_text(*o) + ", got an array containing " +
                               toml_type_name(item));
            }
            in_range(v->get());
            list.push_back(v->get());
          }
          o->value = list;
          break;
        }
        case Kind::PathList: {
          auto a = node.as_array();
          if (!a || a->empty() || !a->is_homogeneous(toml::node_type::string)) throw wrong();
          std::vector<std::string> list;
          for (const auto& item : *a) list.push_back(item.as_string()->get());
          o->value = list;
          break;
        }
        case Kind::ParamList:
          break;
      }
      o->source = Source::Config;
    }
  }
}

std::string Options::help_text(const std::string& synopsis) const {
  std::ostringstream out;
  out << "usage: " << program_ << " " << synopsis << "\n\noptions:\n";
  out << "  --config FILE           TOML file ([" << join(sections_, "], [")
      << "]); flags override it\n";
  for (const auto& o : options_) {
    if (o.flag.empty()) continue;
    std::string left = "  --" + o.flag;
    switch (o.kind) {
      case Kind::Bool: break;
      case Kind::IntList: left += " N [N ...]"; break;
      case Kind::PathList: left += " DIR [DIR ...]"; break;
      case Kind::ParamList: left += " NAME=VALUE"; break;
      case Kind::Choice: left += " {" + join(o.choices, ",") + "}"; break;
      case Kind::Int: left += " N"; break;
      default: left += " VALUE";
    }
    out << left;
    if (left.size() < 26) {
      out << std::string(26 - left.size(), ' ');
    } else {
      out << "\n" << std::string(26, ' ');
    }
    out << o.help;
    if (o.kind != Kind::ParamList) {
      const std::string value = to_text(o.value);
      out << " (default: " << (value.empty() ? "none" : value) << ")";
    }
    out << "  [" << o.section << "] " << o.key << "\n";
  }
  out << "  --list_policies         list the installed policies, their parameters and the modes\n";
  out << "  --version               print the versions of the program, libkvc and its ABIs\n";
  out << "  -h, --help              show this help\n";
  return out.str();
}

}  // namespace kvc::hosts
