// C ABI: models.
#include "api/guard.h"
#include "api/structs.h"
#include "api/handles.h"
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

// The exported ABI 1.0 *_init functions fill the 1.0 layout; the header's macros call
// *_init_size with the caller's sizeof (see "Conventions" in kvc.h).
KVC_API void(kvc_model_options_init)(kvc_model_options* options) {
  init_struct(options, default_model_options(), sizeof(kvc_model_options));
}

KVC_API void kvc_model_options_init_size(kvc_model_options* options, size_t struct_size) {
  init_struct(options, default_model_options(), struct_size);
}

KVC_API kvc_status kvc_model_load(const char* path, const kvc_model_options* options,
                                  kvc_model** out) {
  return guarded([&] {
    require_arg(out, "kvc_model_load", "out");
    *out = nullptr;
    require_arg(path, "kvc_model_load", "path");
    const kvc_model_options o =
        read_struct(options, default_model_options(), "kvc_model_options");
    auto handle = std::make_unique<kvc_model>();
    handle->model = load_model(path, o);
    handle->tokenizer.impl = handle->model->tokenizer;
    *out = handle.release();
  });
}

KVC_API void kvc_model_free(kvc_model* model) { delete model; }

KVC_API void(kvc_model_info_init)(kvc_model_info* info) {
  init_struct(info, kvc_model_info{}, sizeof(kvc_model_info));
}

KVC_API void kvc_model_info_init_size(kvc_model_info* info, size_t struct_size) {
  init_struct(info, kvc_model_info{}, struct_size);
}

KVC_API kvc_status kvc_model_get_info(const kvc_model* model, kvc_model_info* info) {
  return guarded([&] {
    require_arg(model, "kvc_model_get_info", "model");
    require_arg(info, "kvc_model_get_info", "info");
    const Model& m = *model->model;
    const ModelConfig& c = m.config;
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
    v.backend = m.backend;
    switch (m.weights->dtype) {
      case DType::F32: v.weight_dtype = KVC_DTYPE_F32; break;
      case DType::BF16: v.weight_dtype = KVC_DTYPE_BF16; break;
      case DType::F16: v.weight_dtype = KVC_DTYPE_F16; break;
    }
    v.n_threads = m.n_threads;
    v.weight_bytes = m.weights->bytes();
    write_struct(info, v, "kvc_model_info");
  });
}

KVC_API const kvc_tokenizer* kvc_model_tokenizer(const kvc_model* model) {
  return model && model->tokenizer.impl ? &model->tokenizer : nullptr;
}

}  // extern "C"
