// Policy parameters: text (kvc_param) parsed against a plugin's schema (kvc_param_info).
//
// Syntax (kvc.h): integers "128", floats "0.5", booleans true/false/1/0, choices by name,
// lists comma-separated with optional brackets ("0,1" or "[0, 1]"); string-list items may be
// double-quoted with \" \\ \n \t \r escapes (needed for items holding ',' or spaces).
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "common/error.h"
#include "policy/policy.h"

namespace kvc {

namespace {

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

std::string number(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.2e18)
    return std::to_string(static_cast<long long>(v));
  std::ostringstream os;
  os << v;
  return os.str();
}

std::string range_text(const kvc_param_info& p) {
  std::string s = "[";  // appended piecewise: GCC 12 warns (-Wrestrict) on "[" + string&&
  s += number(p.min_value);
  s += ", ";
  s += number(p.max_value);
  s += "]";
  return s;
}

bool parse_int(const std::string& s, int64_t* out) {
  const char* b = s.data();
  const char* e = b + s.size();
  if (b != e && *b == '+') ++b;
  auto r = std::from_chars(b, e, *out);
  return b != e && r.ec == std::errc() && r.ptr == e;
}

// The list body without optional brackets.
std::string list_body(const std::string& text) {
  std::string t = trim(text);
  if (t.size() >= 2 && t.front() == '[' && t.back() == ']') t = trim(t.substr(1, t.size() - 2));
  return t;
}

std::vector<std::string> split_ints(const std::string& body) {
  std::vector<std::string> items;
  if (body.empty()) return items;
  std::string item;
  std::istringstream in(body + ",");
  while (std::getline(in, item, ',')) items.push_back(trim(item));
  return items;
}

// Returns false with *why set on a syntax error.
bool split_strings(const std::string& body, std::vector<std::string>* out, std::string* why) {
  size_t i = 0;
  const size_t n = body.size();
  if (trim(body).empty()) return true;
  while (true) {
    while (i < n && std::isspace(static_cast<unsigned char>(body[i]))) ++i;
    std::string item;
    if (i < n && body[i] == '"') {
      ++i;
      bool closed = false;
      while (i < n) {
        char c = body[i++];
        if (c == '"') { closed = true; break; }
        if (c == '\\' && i < n) {
          char e = body[i++];
          switch (e) {
            case 'n': item += '\n'; break;
            case 't': item += '\t'; break;
            case 'r': item += '\r'; break;
            case '"': item += '"'; break;
            case '\\': item += '\\'; break;
            default: *why = std::string("unknown escape '\\") + e + "' in a quoted item"; return false;
          }
        } else {
          item += c;
        }
      }
      if (!closed) { *why = "a quoted item is not closed"; return false; }
      while (i < n && std::isspace(static_cast<unsigned char>(body[i]))) ++i;
      if (i < n && body[i] != ',') { *why = "text after a quoted item"; return false; }
    } else {
      const size_t end = body.find(',', i);
      item = trim(body.substr(i, end == std::string::npos ? std::string::npos : end - i));
      if (item.empty()) { *why = "an empty item (quote it: \"\")"; return false; }
      i = end == std::string::npos ? n : end;
    }
    out->push_back(item);
    if (i >= n) return true;
    ++i;  // the comma
  }
}

std::vector<std::string> split_choices(const char* choices) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(choices ? choices : "");
  while (std::getline(in, item, '|')) out.push_back(item);
  return out;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

struct Parsed {
  int64_t i = 0;
  double f = 0;
  std::vector<int64_t> ints;
  std::vector<std::string> strings;
};

Parsed parse(const kvc_param_info& p, const std::string& raw, const std::string& where) {
  Parsed r;
  const std::string t = trim(raw);
  const std::string head = where + " = '" + raw + "': ";
  switch (p.type) {
    case KVC_PARAM_INT:
      require(parse_int(t, &r.i), KVC_ERR_INVALID_ARGUMENT, head + "expected an integer");
      require(static_cast<double>(r.i) >= p.min_value && static_cast<double>(r.i) <= p.max_value,
              KVC_ERR_INVALID_ARGUMENT, head + "out of range, allowed " + range_text(p));
      break;
    case KVC_PARAM_FLOAT: {
      char* end = nullptr;
      r.f = t.empty() ? 0 : std::strtod(t.c_str(), &end);
      require(!t.empty() && end == t.c_str() + t.size() && std::isfinite(r.f),
              KVC_ERR_INVALID_ARGUMENT, head + "expected a finite number");
      require(r.f >= p.min_value && r.f <= p.max_value, KVC_ERR_INVALID_ARGUMENT,
              head + "out of range, allowed " + range_text(p));
      break;
    }
    case KVC_PARAM_BOOL:
      if (t == "true" || t == "1") r.i = 1;
      else if (t == "false" || t == "0") r.i = 0;
      else fail(KVC_ERR_INVALID_ARGUMENT, head + "expected a boolean: true, false, 1 or 0");
      break;
    case KVC_PARAM_CHOICE: {
      const auto choices = split_choices(p.choices);
      size_t k = 0;
      while (k < choices.size() && choices[k] != t) ++k;
      require(k < choices.size(), KVC_ERR_INVALID_ARGUMENT,
              head + "not one of the choices: " + join(choices, ", "));
      r.i = static_cast<int64_t>(k);
      r.strings.push_back(choices[k]);
      break;
    }
    case KVC_PARAM_INT_LIST:
      for (const auto& item : split_ints(list_body(t))) {
        int64_t v = 0;
        require(parse_int(item, &v), KVC_ERR_INVALID_ARGUMENT,
                head + "item '" + item + "' is not an integer (expected comma-separated integers, "
                       "e.g. \"0,1,2\")");
        require(static_cast<double>(v) >= p.min_value && static_cast<double>(v) <= p.max_value,
                KVC_ERR_INVALID_ARGUMENT,
                head + "item " + item + " is out of range, allowed " + range_text(p));
        r.ints.push_back(v);
      }
      break;
    case KVC_PARAM_STRING_LIST: {
      std::string why;
      const bool ok = split_strings(list_body(t), &r.strings, &why);
      require(ok, KVC_ERR_INVALID_ARGUMENT, head + "not a list of strings: " + why);
      break;
    }
    default:
      fail(KVC_ERR_POLICY, where + ": unknown parameter type " +
                               std::to_string(static_cast<int>(p.type)));
  }
  return r;
}

// The schema of a descriptor, read with the stride of params[0] (see loader.cpp).
std::vector<kvc_param_info> schema_of(const kvc_policy_descriptor& d) {
  std::vector<kvc_param_info> out;
  if (d.n_params == 0 || d.params == nullptr) return out;
  const size_t stride = d.params[0].struct_size;
  const auto* base = reinterpret_cast<const unsigned char*>(d.params);
  for (size_t i = 0; i < d.n_params; ++i) {
    kvc_param_info p;
    std::memcpy(&p, base + i * stride, sizeof p);
    out.push_back(p);
  }
  return out;
}

}  // namespace

void ParsedParams::check_value(const kvc_param_info& info, const std::string& text,
                               const std::string& where) {
  parse(info, text, where);
}

ParsedParams::ParsedParams(const LoadedPolicy& policy, const kvc_param* params, size_t n_params) {
  init(policy.params.data(), policy.params.size(), params, n_params, policy.label());
}

ParsedParams::ParsedParams(const kvc_policy_descriptor& desc, const kvc_param* params,
                           size_t n_params) {
  const auto schema = schema_of(desc);
  init(schema.data(), schema.size(), params, n_params,
       std::string("policy '") + (desc.name ? desc.name : "?") + "'");
}

ParsedParams::ParsedParams(const kvc_param_info* schema, size_t n_schema, const kvc_param* params,
                           size_t n_params, const std::string& label) {
  init(schema, n_schema, params, n_params, label);
}

void ParsedParams::init(const kvc_param_info* schema, size_t n_schema, const kvc_param* params,
                        size_t n_params, const std::string& label) {
  require(n_params == 0 || params != nullptr, KVC_ERR_INVALID_ARGUMENT,
          label + ": " + std::to_string(n_params) + " parameters given but the array is NULL");
  slots_.resize(n_schema);
  std::vector<bool> given(n_schema, false);
  for (size_t i = 0; i < n_schema; ++i) slots_[i].text = schema[i].default_value;
  for (size_t j = 0; j < n_params; ++j) {
    const kvc_param& kp = params[j];
    require(kp.name != nullptr && kp.value != nullptr, KVC_ERR_INVALID_ARGUMENT,
            label + ": parameter " + std::to_string(j) + " has a NULL name or value");
    size_t k = 0;
    while (k < n_schema && std::strcmp(schema[k].name, kp.name) != 0) ++k;
    if (k == n_schema) {
      std::vector<std::string> names;
      for (size_t i = 0; i < n_schema; ++i) names.push_back(schema[i].name);
      fail(KVC_ERR_INVALID_ARGUMENT,
           label + ": unknown parameter '" + kp.name + "'; valid parameters: " +
               (names.empty() ? std::string("(none: this policy takes no parameters)")
                              : join(names, ", ")));
    }
    require(!given[k], KVC_ERR_INVALID_ARGUMENT,
            label + ": parameter '" + kp.name + "' is given twice");
    given[k] = true;
    slots_[k].text = kp.value;
  }
  values_.resize(n_schema);
  for (size_t i = 0; i < n_schema; ++i) {
    Parsed r = parse(schema[i], slots_[i].text, label + ": parameter '" + schema[i].name + "'");
    Slot& s = slots_[i];
    s.ints = std::move(r.ints);
    s.strings = std::move(r.strings);
    for (const auto& str : s.strings) s.cstrs.push_back(str.c_str());
    kvc_policy_value& v = values_[i];
    v = kvc_policy_value{};
    v.i = r.i;
    v.f = r.f;
    v.ints = s.ints.empty() ? nullptr : s.ints.data();
    v.n_ints = s.ints.size();
    v.strings = s.cstrs.empty() ? nullptr : s.cstrs.data();
    v.n_strings = s.cstrs.size();
  }
}

}  // namespace kvc
