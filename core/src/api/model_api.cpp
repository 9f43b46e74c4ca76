// C ABI: models.
#include "api/guard.h"
#include "api/structs.h"
#include "engine/model.h"
#include "kvc/kvc.h"

using namespace kvc;

namespace {
kvc_model_options default_model_options() {
  kvc_model_options o{};
  o.struct_size = sizeof(o);
  o.backend = KVC_BACKEND_AUTO;
  o.weight_dtype = KVC_DTYPE_AUTO;
  o.n_threads = 0;
  o.device = 0;
  o.seed = 0;
  return o;
}
}  // namespace

extern "C" {

KVC_API void kvc_model_options_init(kvc_model_options* options) {
  if (options) *options = default_model_options();
}

KVC_API kvc_status kvc_model_load(const char* path, const kvc_model_options* options,
                                  kvc_model** out) {
  return guarded([&] {
    require_arg(out, "kvc_model_load", "out");
    *out = nullptr;
    require_arg(path, "kvc_model_load", "path");
    const kvc_model_options o =
        read_struct(options, default_model_options(), "kvc_model_options");
    *out = load_model(path, o).release();
  });
}

KVC_API void kvc_model_free(kvc_model* model) { delete model; }

KVC_API void kvc_model_info_init(kvc_model_info* info) {
  if (!info) return;
  *info = kvc_model_info{};
  info->struct_size = sizeof(*info);
}

KVC_API kvc_status kvc_model_get_info(const kvc_model* model, kvc_model_info* info) {
  return guarded([&] {
    require_arg(model, "kvc_model_get_info", "model");
    require_arg(info, "kvc_model_get_info", "info");
    const ModelConfig& c = model->config;
    kvc_model_info v{};
    v.struct_size = sizeof(v);
    v.n_layers = c.n_layers;
    v.n_heads = c.n_heads;
    v.head_dim = c.head_dim;
    v.hidden_size = c.hidden_size;
    v.intermediate_size = c.intermediate_size;
    v.vocab_size = c.vocab_size;
    v.max_position_embeddings = c.max_position_embeddings;
    v.rotary_ndims = c.rotary_ndims;
    v.rotary_base = c.rotary_base;
    v.layer_norm_eps = c.layer_norm_eps;
    v.use_parallel_residual = c.use_parallel_residual ? 1 : 0;
    v.backend = model->backend;
    switch (model->weights->dtype) {
      case DType::F32: v.weight_dtype = KVC_DTYPE_F32; break;
      case DType::BF16: v.weight_dtype = KVC_DTYPE_BF16; break;
      case DType::F16: v.weight_dtype = KVC_DTYPE_F16; break;
    }
    v.n_threads = model->n_threads;
    v.weight_bytes = model->weights->bytes();
    write_struct(info, v, "kvc_model_info");
  });
}

KVC_API const kvc_tokenizer* kvc_model_tokenizer(const kvc_model* model) {
  return model ? model->tokenizer.get() : nullptr;
}

}  // extern "C"
