// config.json: kvc::parse_config_json on arbitrary text. An accepted config must describe a
// model the engine can build (the numbers it derives are consistent).
#include "fuzz_util.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const kvc::ModelConfig c = kvc::parse_config_json(text, "fuzz/config.json");
    if (c.n_layers <= 0 || c.n_heads <= 0 || c.hidden_size <= 0 || c.intermediate_size <= 0 ||
        c.vocab_size <= 0 || c.max_position_embeddings <= 0)
      kvc::fuzz::broken("accepted a non-positive dimension");
    if (c.head_dim * c.n_heads != c.hidden_size) kvc::fuzz::broken("head_dim * heads != hidden");
    if (c.rotary_ndims <= 0 || c.rotary_ndims % 2 || c.rotary_ndims > c.head_dim)
      kvc::fuzz::broken("accepted rotary_ndims " + std::to_string(c.rotary_ndims));
    if (!(c.layer_norm_eps > 0) || !(c.rotary_base > 0))
      kvc::fuzz::broken("accepted a non-positive eps or rotary base");
    (void)c.n_params();
  } catch (const kvc::Error& e) {
    kvc::fuzz::check_error(e);
  }
  return 0;
}
