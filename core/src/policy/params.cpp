// Policy parameters: typed values checked against a plugin's schema (params.h).
//
// Text syntax (kvc.h): integers "128", floats "0.5", booleans true/false/1/0, choices by name,
// lists comma-separated with optional brackets ("0,1" or "[0, 1]"); string-list items may be
// double-quoted with \" \\ \n \t \r escapes (needed for items holding ',' or spaces).
#include "policy/params.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "common/error.h"

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

bool in_range(double v, const kvc_param_info& p) { return v >= p.min_value && v <= p.max_value; }

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

const char* type_name(kvc_param_type t) {
  switch (t) {
    case KVC_PARAM_INT: return "an integer";
    case KVC_PARAM_FLOAT: return "a number";
    case KVC_PARAM_BOOL: return "a boolean";
    case KVC_PARAM_CHOICE: return "a choice";
    case KVC_PARAM_INT_LIST: return "a list of integers";
    case KVC_PARAM_STRING_LIST: return "a list of strings";
  }
  return "a value";
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
      require(in_range(static_cast<double>(r.i), p), KVC_ERR_INVALID_ARGUMENT,
              head + "out of range, allowed " + range_text(p));
      break;
    case KVC_PARAM_FLOAT: {
      char* end = nullptr;
      r.f = t.empty() ? 0 : std::strtod(t.c_str(), &end);
      require(!t.empty() && end == t.c_str() + t.size() && std::isfinite(r.f),
              KVC_ERR_INVALID_ARGUMENT, head + "expected a finite number");
      require(in_range(r.f, p), KVC_ERR_INVALID_ARGUMENT,
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
        require(in_range(static_cast<double>(v), p), KVC_ERR_INVALID_ARGUMENT,
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

}  // namespace

void PolicyParams::check_text(const kvc_param_info& info, const std::string& text,
                              const std::string& where) {
  parse(info, text, where);
}

PolicyParams::PolicyParams(std::vector<kvc_param_info> schema, std::string label)
    : schema_(std::move(schema)), label_(std::move(label)) {
  slots_.resize(schema_.size());
  values_.resize(schema_.size());
  for (size_t i = 0; i < schema_.size(); ++i) {
    Parsed r = parse(schema_[i], schema_[i].default_value, where(i) + " (default)");
    Slot& s = slots_[i];
    s.i = r.i;
    s.f = r.f;
    s.ints = std::move(r.ints);
    s.strings = std::move(r.strings);
    publish(i);
  }
}

std::string PolicyParams::where(size_t i) const {
  return label_ + ": parameter '" + schema_[i].name + "'";
}

size_t PolicyParams::index_of(const char* name) const {
  require(name != nullptr, KVC_ERR_INVALID_ARGUMENT, label_ + ": a parameter name is NULL");
  for (size_t k = 0; k < schema_.size(); ++k)
    if (std::strcmp(schema_[k].name, name) == 0) return k;
  std::vector<std::string> names;
  for (const auto& p : schema_) names.push_back(p.name);
  fail(KVC_ERR_INVALID_ARGUMENT,
       label_ + ": unknown parameter '" + name + "'; valid parameters: " +
           (names.empty() ? std::string("(none: this policy takes no parameters)")
                          : join(names, ", ")));
}

PolicyParams::Slot& PolicyParams::slot_to_set(const char* name, size_t* index) {
  const size_t k = index_of(name);
  require(!slots_[k].given, KVC_ERR_INVALID_ARGUMENT,
          label_ + ": parameter '" + name + "' is given twice");
  *index = k;
  return slots_[k];
}

void PolicyParams::publish(size_t i) {
  Slot& s = slots_[i];
  s.cstrs.clear();
  for (const auto& str : s.strings) s.cstrs.push_back(str.c_str());
  kvc_policy_value& v = values_[i];
  v = kvc_policy_value{};
  v.i = s.i;
  v.f = s.f;
  v.ints = s.ints.empty() ? nullptr : s.ints.data();
  v.n_ints = s.ints.size();
  v.strings = s.cstrs.empty() ? nullptr : s.cstrs.data();
  v.n_strings = s.cstrs.size();
}

void PolicyParams::set_text(const char* name, const char* text) {
  size_t k = 0;
  Slot& s = slot_to_set(name, &k);
  require(text != nullptr, KVC_ERR_INVALID_ARGUMENT, where(k) + ": the value is NULL");
  Parsed r = parse(schema_[k], text, where(k));
  s.i = r.i;
  s.f = r.f;
  s.ints = std::move(r.ints);
  s.strings = std::move(r.strings);
  s.given = true;
  publish(k);
}

void PolicyParams::set_int(const char* name, int64_t value) {
  size_t k = 0;
  Slot& s = slot_to_set(name, &k);
  const kvc_param_info& p = schema_[k];
  const std::string head = where(k) + " = " + std::to_string(value) + ": ";
  switch (p.type) {
    case KVC_PARAM_INT:
    case KVC_PARAM_FLOAT:
    case KVC_PARAM_INT_LIST:
      require(in_range(static_cast<double>(value), p), KVC_ERR_INVALID_ARGUMENT,
              head + "out of range, allowed " + range_text(p));
      break;
    default:
      fail(KVC_ERR_INVALID_ARGUMENT, head + "expected " + type_name(p.type) + ", got an integer");
  }
  if (p.type == KVC_PARAM_INT) s.i = value;
  if (p.type == KVC_PARAM_FLOAT) s.f = static_cast<double>(value);
  if (p.type == KVC_PARAM_INT_LIST) s.ints.assign(1, value);
  s.given = true;
  publish(k);
}

void PolicyParams::set_float(const char* name, double value) {
  size_t k = 0;
  Slot& s = slot_to_set(name, &k);
  const kvc_param_info& p = schema_[k];
  const std::string head = where(k) + " = " + number(value) + ": ";
  require(p.type == KVC_PARAM_FLOAT, KVC_ERR_INVALID_ARGUMENT,
          head + "expected " + type_name(p.type) + ", got a float");
  require(std::isfinite(value), KVC_ERR_INVALID_ARGUMENT, head + "expected a finite number");
  require(in_range(value, p), KVC_ERR_INVALID_ARGUMENT,
          head + "out of range, allowed " + range_text(p));
  s.f = value;
  s.given = true;
  publish(k);
}

void PolicyParams::set_bool(const char* name, bool value) {
  size_t k = 0;
  Slot& s = slot_to_set(name, &k);
  require(schema_[k].type == KVC_PARAM_BOOL, KVC_ERR_INVALID_ARGUMENT,
          where(k) + " = " + (value ? "true" : "false") + ": expected " +
              type_name(schema_[k].type) + ", got a boolean");
  s.i = value ? 1 : 0;
  s.given = true;
  publish(k);
}

void PolicyParams::set_ints(const char* name, const int64_t* values, size_t n) {
  size_t k = 0;
  Slot& s = slot_to_set(name, &k);
  const kvc_param_info& p = schema_[k];
  require(p.type == KVC_PARAM_INT_LIST, KVC_ERR_INVALID_ARGUMENT,
          where(k) + ": expected " + type_name(p.type) + ", got a list of integers");
  require(n == 0 || values != nullptr, KVC_ERR_INVALID_ARGUMENT,
          where(k) + ": " + std::to_string(n) + " items but the array is NULL");
  for (size_t j = 0; j < n; ++j)
    require(in_range(static_cast<double>(values[j]), p), KVC_ERR_INVALID_ARGUMENT,
            where(k) + ": item " + std::to_string(values[j]) + " is out of range, allowed " +
                range_text(p));
  s.ints.assign(values, values + n);
  s.given = true;
  publish(k);
}

void PolicyParams::set_strings(const char* name, const char* const* values, size_t n) {
  size_t k = 0;
  Slot& s = slot_to_set(name, &k);
  require(schema_[k].type == KVC_PARAM_STRING_LIST, KVC_ERR_INVALID_ARGUMENT,
          where(k) + ": expected " + type_name(schema_[k].type) + ", got a list of strings");
  require(n == 0 || values != nullptr, KVC_ERR_INVALID_ARGUMENT,
          where(k) + ": " + std::to_string(n) + " items but the array is NULL");
  std::vector<std::string> items;
  for (size_t j = 0; j < n; ++j) {
    require(values[j] != nullptr, KVC_ERR_INVALID_ARGUMENT,
            where(k) + ": item " + std::to_string(j) + " is NULL");
    items.emplace_back(values[j]);
  }
  s.strings = std::move(items);
  s.given = true;
  publish(k);
}

void PolicyParams::set_all(const kvc_param* params, size_t n) {
  require(n == 0 || params != nullptr, KVC_ERR_INVALID_ARGUMENT,
          label_ + ": " + std::to_string(n) + " parameters given but the array is NULL");
  for (size_t j = 0; j < n; ++j) {
    require(params[j].name != nullptr && params[j].value != nullptr, KVC_ERR_INVALID_ARGUMENT,
            label_ + ": parameter " + std::to_string(j) + " has a NULL name or value");
    set_text(params[j].name, params[j].value);
  }
}

kvc_param_value PolicyParams::value(size_t i) const {
  const kvc_policy_value& v = values_[i];
  kvc_param_value out{};
  out.struct_size = sizeof out;
  out.type = schema_[i].type;
  out.i = v.i;
  out.f = v.f;
  out.ints = v.ints;
  out.n_ints = v.n_ints;
  out.strings = v.strings;
  out.n_strings = v.n_strings;
  return out;
}

}  // namespace kvc
