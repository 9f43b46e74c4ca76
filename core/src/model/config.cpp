#include "model/config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace kvc {
namespace {

using nlohmann::json;

std::string describe(const json& v) {
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

std::string type_of(const json& v) {
  if (v.is_number_integer() || v.is_number_unsigned()) return "an integer";
  if (v.is_number_float()) return "a number";
  return std::string("a ") + v.type_name();
}

// Accessors that name the file and key in every failure.
class ConfigReader {
 public:
  ConfigReader(const json& j, const std::string& origin) : j_(j), origin_(origin) {}

  const json* find(const std::string& key) const {
    auto it = j_.find(key);
    return it == j_.end() ? nullptr : &*it;
  }

  [[noreturn]] void bad(kvc_status st, const std::string& key, const std::string& msg) const {
    fail(st, origin_ + ": key '" + key + "' " + msg);
  }

  int positive_int(const std::string& key, std::optional<int> fallback = std::nullopt,
                   int64_t max_value = int64_t{1} << 30) const {
    const json* v = find(key);
    if (!v || v->is_null()) {
      if (fallback) return *fallback;
      bad(KVC_ERR_FORMAT, key, "is missing (expected a positive integer)");
    }
    int64_t x = 0;
    if (v->is_number_unsigned()) {
      uint64_t u = v->get<uint64_t>();
      x = u > static_cast<uint64_t>(max_value) ? max_value + 1 : static_cast<int64_t>(u);
    } else if (v->is_number_integer()) {
      x = v->get<int64_t>();
    } else {
      bad(KVC_ERR_FORMAT, key,
          "is " + type_of(*v) + " (" + describe(*v) + "), expected a positive integer");
    }
    if (x <= 0 || x > max_value)
      bad(KVC_ERR_FORMAT, key,
          "is " + describe(*v) + ", expected an integer in [1, " + std::to_string(max_value) + "]");
    return static_cast<int>(x);
  }

  std::optional<double> number(const json& obj, const std::string& key,
                               const std::string& shown) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return std::nullopt;
    if (!it->is_number())
      bad(KVC_ERR_FORMAT, shown,
          "is " + type_of(*it) + " (" + describe(*it) + "), expected a number");
    double d = it->get<double>();
    if (!std::isfinite(d)) bad(KVC_ERR_FORMAT, shown, "is not finite");
    return d;
  }

  std::optional<bool> boolean(const std::string& key) const {
    const json* v = find(key);
    if (!v || v->is_null()) return std::nullopt;
    if (!v->is_boolean())
      bad(KVC_ERR_FORMAT, key,
          "is " + type_of(*v) + " (" + describe(*v) + "), expected true or false");
    return v->get<bool>();
  }

  std::optional<std::string> string(const std::string& key) const {
    const json* v = find(key);
    if (!v || v->is_null()) return std::nullopt;
    if (!v->is_string())
      bad(KVC_ERR_FORMAT, key, "is " + type_of(*v) + " (" + describe(*v) + "), expected a string");
    return v->get<std::string>();
  }

  const json& root() const { return j_; }
  const std::string& origin() const { return origin_; }

 private:
  const json& j_;
  const std::string& origin_;
};

// Several spellings of one setting (rotary_pct / partial_rotary_factor / rope_parameters...):
// any that are present must agree; HF's default applies when none is.
struct Spelling {
  std::string shown;
  double value;
};

// True when v is positive and stays a normal, finite number once narrowed to float.
bool positive_finite_float(double v) {
  const float f = static_cast<float>(v);
  return std::isfinite(f) && f >= std::numeric_limits<float>::min();
}

double agree(const ConfigReader& r, const std::vector<Spelling>& found, double fallback) {
  if (found.empty()) return fallback;
  for (const auto& s : found) {
    if (s.value != found.front().value) {
      std::ostringstream os;
      os << r.origin() << ": '" << found.front().shown << "' is " << found.front().value << " but '"
         << s.shown << "' is " << s.value << "; they must agree";
      fail(KVC_ERR_FORMAT, os.str());
    }
  }
  return found.front().value;
}

void check_architecture(const ConfigReader& r) {
  auto model_type = r.string("model_type");
  const json* archs = r.find("architectures");
  if (archs && !archs->is_null() && !archs->is_array())
    r.bad(KVC_ERR_FORMAT, "architectures",
          "is " + type_of(*archs) + ", expected a list of class names");
  if (model_type && *model_type != "gpt_neox")
    r.bad(KVC_ERR_UNSUPPORTED, "model_type",
          "is \"" + *model_type + "\"; only \"gpt_neox\" (GPT-NeoX / Pythia) is supported");
  if (archs && archs->is_array() && !archs->empty()) {
    bool causal = false;
    for (const auto& a : *archs)
      causal |= a.is_string() && a.get<std::string>() == "GPTNeoXForCausalLM";
    if (!causal)
      r.bad(KVC_ERR_UNSUPPORTED, "architectures",
            "is " + describe(*archs) + "; expected it to contain \"GPTNeoXForCausalLM\"");
    return;
  }
  if (!model_type)
    r.bad(KVC_ERR_FORMAT, "model_type",
          "is missing (expected \"gpt_neox\", or architectures [\"GPTNeoXForCausalLM\"])");
}

}  // namespace

size_t ModelConfig::n_params() const {
  const size_t h = hidden_size, i = intermediate_size, v = vocab_size;
  const size_t per_layer = 4 * h                // two layer norms
                           + 3 * h * h + 3 * h  // fused qkv
                           + h * h + h          // attention output
                           + i * h + i          // dense_h_to_4h
                           + h * i + h;         // dense_4h_to_h
  return 2 * v * h + 2 * h + static_cast<size_t>(n_layers) * per_layer;
}

ModelConfig parse_config_json(std::string_view text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e400
    fail(KVC_ERR_FORMAT, origin + ": not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object())
    fail(KVC_ERR_FORMAT,
         origin + ": expected a JSON object at the top level, found " + std::string(j.type_name()));
  ConfigReader r(j, origin);
  check_architecture(r);

  ModelConfig c;
  c.hidden_size = r.positive_int("hidden_size", std::nullopt, 1 << 20);
  c.n_heads = r.positive_int("num_attention_heads", std::nullopt, 1 << 14);
  c.n_layers = r.positive_int("num_hidden_layers", std::nullopt, 1 << 14);
  c.intermediate_size = r.positive_int("intermediate_size", std::nullopt, 1 << 22);
  c.vocab_size = r.positive_int("vocab_size", std::nullopt, 1 << 24);
  // Optional keys default to transformers' GPTNeoXConfig defaults, as transformers itself does.
  c.max_position_embeddings = r.positive_int("max_position_embeddings", 2048);

  if (c.hidden_size % c.n_heads != 0)
    fail(KVC_ERR_FORMAT, origin + ": hidden_size " + std::to_string(c.hidden_size) +
                             " is not divisible by num_attention_heads " +
                             std::to_string(c.n_heads));
  c.head_dim = c.hidden_size / c.n_heads;

  auto act = r.string("hidden_act").value_or("gelu");
  if (act != "gelu")
    r.bad(KVC_ERR_UNSUPPORTED, "hidden_act",
          "is \"" + act + "\"; only \"gelu\" (exact erf GELU, as in Pythia) is supported");
  if (r.boolean("tie_word_embeddings").value_or(false))
    r.bad(KVC_ERR_UNSUPPORTED, "tie_word_embeddings",
          "is true; only untied embed_out (as in Pythia) is supported");
  if (!r.boolean("attention_bias").value_or(true))
    r.bad(KVC_ERR_UNSUPPORTED, "attention_bias",
          "is false; only attention projections with biases (as in Pythia) are supported");
  c.use_parallel_residual = r.boolean("use_parallel_residual").value_or(true);

  if (const json* rs = r.find("rope_scaling"); rs && !rs->is_null())
    r.bad(KVC_ERR_UNSUPPORTED, "rope_scaling",
          "is " + describe(*rs) + "; rotary scaling is not supported");

  std::vector<Spelling> pct, base;
  if (auto v = r.number(j, "rotary_pct", "rotary_pct")) pct.push_back({"rotary_pct", *v});
  if (auto v = r.number(j, "partial_rotary_factor", "partial_rotary_factor"))
    pct.push_back({"partial_rotary_factor", *v});
  if (auto v = r.number(j, "rotary_emb_base", "rotary_emb_base"))
    base.push_back({"rotary_emb_base", *v});
  if (auto v = r.number(j, "rope_theta", "rope_theta")) base.push_back({"rope_theta", *v});
  if (const json* rp = r.find("rope_parameters"); rp && !rp->is_null()) {
    if (!rp->is_object())
      r.bad(KVC_ERR_FORMAT, "rope_parameters", "is " + type_of(*rp) + ", expected an object");
    auto type = rp->find("rope_type");
    if (type != rp->end() && !type->is_null() &&
        !(type->is_string() && type->get<std::string>() == "default"))
      r.bad(KVC_ERR_UNSUPPORTED, "rope_parameters.rope_type",
            "is " + describe(*type) + "; only \"default\" rotary embeddings are supported");
    if (auto v = r.number(*rp, "partial_rotary_factor", "rope_parameters.partial_rotary_factor"))
      pct.push_back({"rope_parameters.partial_rotary_factor", *v});
    if (auto v = r.number(*rp, "rope_theta", "rope_parameters.rope_theta"))
      base.push_back({"rope_parameters.rope_theta", *v});
  }
  const double rotary_pct = agree(r, pct, 0.25);
  const double rotary_base = agree(r, base, 10000.0);
  if (!(rotary_pct > 0.0 && rotary_pct <= 1.0))
    r.bad(KVC_ERR_FORMAT, pct.front().shown,
          "is " + std::to_string(rotary_pct) + ", expected a fraction in (0, 1]");
  // Checked as the float the engine computes with: a positive double can still underflow
  // to 0 or overflow to infinity there.
  if (!positive_finite_float(rotary_base))
    r.bad(KVC_ERR_FORMAT, base.front().shown,
          "is " + std::to_string(rotary_base) + ", expected a positive number within float range");
  // Same expression as transformers: int(head_size * rotary_pct), in double precision.
  c.rotary_ndims = static_cast<int>(c.head_dim * rotary_pct);
  if (c.rotary_ndims <= 0 || c.rotary_ndims % 2 != 0)
    fail(KVC_ERR_UNSUPPORTED,
         origin + ": rotary dimensions int(head_dim " + std::to_string(c.head_dim) +
             " * rotary_pct " + std::to_string(rotary_pct) +
             ") = " + std::to_string(c.rotary_ndims) + "; expected a positive even number");
  c.rotary_base = static_cast<float>(rotary_base);

  auto eps = r.number(j, "layer_norm_eps", "layer_norm_eps").value_or(1e-5);
  if (!(eps < 1.0) || !positive_finite_float(eps))
    r.bad(KVC_ERR_FORMAT, "layer_norm_eps",
          "is " + std::to_string(eps) + ", expected a small positive number (float range)");
  c.layer_norm_eps = static_cast<float>(eps);

  // transformers 5 writes "dtype", earlier versions "torch_dtype".
  if (auto d = r.string("torch_dtype"))
    c.torch_dtype = *d;
  else if (auto d2 = r.string("dtype"))
    c.torch_dtype = *d2;

  std::filesystem::path p(origin);
  c.name = p.has_parent_path() ? p.parent_path().filename().string() : origin;
  if (c.name.empty()) c.name = origin;
  return c;
}

ModelConfig load_config_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path p(path);
  if (fs::is_directory(p, ec)) {
    p /= "config.json";
  } else if (!fs::exists(p, ec)) {
    // Name the folder when it is the folder that is missing.
    const fs::path folder = p.filename() == "config.json" ? p.parent_path() : p;
    if (!folder.empty() && !fs::exists(folder, ec))
      fail(KVC_ERR_IO, "model folder '" + folder.string() + "' does not exist");
  }
  std::ifstream in(p, std::ios::binary);
  if (!in)
    fail(KVC_ERR_IO, p.string() + ": cannot open (" +
                         (fs::exists(p, ec) ? "not readable" : "no such file") + ")");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(KVC_ERR_IO, p.string() + ": read error");
  return parse_config_json(ss.str(), p.string());
}

namespace {

struct PythiaShape {
  const char* name;
  int hidden, layers, heads, vocab;
};

// Pythia suite (EleutherAI): intermediate = 4 * hidden, rotary_pct 0.25, max_pos 2048.
constexpr PythiaShape kPythia[] = {
    {"pythia-70m", 512, 6, 8, 50304},     {"pythia-160m", 768, 12, 12, 50304},
    {"pythia-410m", 1024, 24, 16, 50304}, {"pythia-1b", 2048, 16, 8, 50304},
    {"pythia-1.4b", 2048, 24, 16, 50304}, {"pythia-2.8b", 2560, 32, 32, 50304},
    {"pythia-6.9b", 4096, 32, 32, 50432}, {"pythia-12b", 5120, 36, 40, 50688},
};

}  // namespace

const std::vector<std::string>& synthetic_model_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& s : kPythia) v.emplace_back(s.name);
    return v;
  }();
  return names;
}

ModelConfig synthetic_config(std::string_view name) {
  std::string_view n = name;
  if (n.starts_with("synthetic:")) n.remove_prefix(10);
  for (const auto& s : kPythia) {
    if (n != s.name) continue;
    ModelConfig c;
    c.name = s.name;
    c.hidden_size = s.hidden;
    c.n_layers = s.layers;
    c.n_heads = s.heads;
    c.head_dim = s.hidden / s.heads;
    c.intermediate_size = 4 * s.hidden;
    c.vocab_size = s.vocab;
    c.max_position_embeddings = 2048;
    c.rotary_ndims = static_cast<int>(c.head_dim * 0.25);
    c.rotary_base = 10000.0f;
    c.layer_norm_eps = 1e-5f;
    c.use_parallel_residual = true;
    c.torch_dtype = "float16";
    return c;
  }
  std::string list;
  for (const auto& s : kPythia) list += (list.empty() ? "" : ", ") + std::string(s.name);
  fail(KVC_ERR_NOT_FOUND,
       "unknown synthetic model '" + std::string(name) + "'; valid names: " + list);
}

}  // namespace kvc
