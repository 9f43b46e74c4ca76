// Policy parameters: text NAME=VALUE pairs parsed against each bundled policy's schema
// (kvc::PolicyParams), then, when they parse, a real instance created from them
// (kvc::PolicyInstance: the plugin's own create checks plus the host's setup validation),
// with and without model dimensions.
//
// Input: byte 0 picks the policy, byte 1 bit 0 gives the instance a model (the embedded
// model's shape and tokenizer); the rest is one NAME=VALUE per line.
#include <memory>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "policy/policy.h"
#include "tokenizer/tokenizer.h"

namespace {

const std::vector<std::shared_ptr<const kvc::LoadedPolicy>>& policies() {
  static const auto all = [] {
    std::vector<std::shared_ptr<const kvc::LoadedPolicy>> v;
    for (const char* name : {"baseline", "streaming", "h2o", "lazy_h2o", "sepllm", "unified"})
      v.push_back(kvc::load_policy(name, KVC_BUILD_POLICY_DIR));
    return v;
  }();
  return all;
}

const kvc::Tokenizer& tokenizer() {
  static const auto tok =
      kvc::Tokenizer::load_file(std::string(KVC_SOURCE_DIR) + "/models/kjv-mini/tokenizer.json");
  return *tok;
}

int64_t tokenize(void*, const char* text, int32_t* ids, size_t capacity) {
  const std::vector<int32_t> out = tokenizer().encode(text);
  for (size_t i = 0; i < out.size() && i < capacity; ++i) ids[i] = out[i];
  return static_cast<int64_t>(out.size());
}

int64_t no_tokenizer(void*, const char*, int32_t*, size_t) { return -1; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvc::fuzz::Bytes in(data, size);
  const auto& all = policies();
  const auto& policy = all[in.u8() % all.size()];
  const bool with_model = in.u8() & 1;
  const std::string_view text = in.rest();

  std::vector<std::string> names, values;
  size_t from = 0;
  while (from < text.size()) {
    size_t end = text.find('\n', from);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(from, end - from);
    const size_t eq = line.find('=');
    names.emplace_back(line.substr(0, eq));
    values.emplace_back(eq == std::string_view::npos ? "" : line.substr(eq + 1));
    from = end + 1;
  }
  std::vector<kvc_param> params;
  for (size_t i = 0; i < names.size(); ++i)
    params.push_back({names[i].c_str(), values[i].c_str()});

  const auto parsed = policy->make_params();
  try {
    parsed->set_all(params.data(), params.size());
    if (parsed->size() != policy->params.size()) kvc::fuzz::broken("one value per schema entry");
  } catch (const kvc::Error& e) {
    kvc::fuzz::check_error(e);
    return 0;
  }
  kvc_policy_host host{};
  host.struct_size = sizeof host;
  if (with_model) {
    host.n_layers = 4;
    host.n_heads = 4;
    host.vocab_size = 3072;
    host.max_position_embeddings = 2048;
  }
  host.tokenize = with_model ? tokenize : no_tokenizer;
  try {
    kvc::PolicyInstance instance(policy, host, *parsed);
    const kvc_policy_setup& s = instance.setup();
    if (s.capacity < -1) kvc::fuzz::broken("accepted a setup with capacity < -1");
    instance.reset();
  } catch (const kvc::Error& e) {
    kvc::fuzz::check_error(e);
  }
  return 0;
}
