#include "model/weights.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/dtype_convert.h"
#include "model/safetensors.h"

namespace kvc {
namespace {

namespace fs = std::filesystem;

constexpr size_t kAlign = 64;
constexpr size_t kGrain = size_t{1} << 20;  // elements per parallel work item

// The conversion and generation loops vectorise well, 64-bit multiplies included, with AVX-512;
// compile them for several x86-64 levels and pick one at load time. Not under sanitizers: the
// instrumented ifunc resolver runs during relocation, before the sanitizer runtime is ready.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define KVC_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KVC_MULTIVERSION
#endif

size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

enum class Role {
  EmbedIn,
  Ln1W,
  Ln1B,
  QkvW,
  QkvB,
  DenseW,
  DenseB,
  Ln2W,
  Ln2B,
  FcInW,
  FcInB,
  FcOutW,
  FcOutB,
  FinalLnW,
  FinalLnB,
  EmbedOut
};

// One weight of the model: its HF name, expected shape and place in the arena.
struct Slot {
  Role role;
  int layer;  // -1 outside the layers
  std::string name;
  std::vector<int64_t> shape;
  bool matrix;  // stored in the requested dtype; everything else is float32
  size_t numel = 0;
  size_t offset = 0;
  size_t bytes = 0;
};

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

std::vector<Slot> plan_slots(const ModelConfig& c, DType dtype, size_t& total, size_t& stored) {
  const int64_t h = c.hidden_size, i4 = c.intermediate_size, v = c.vocab_size;
  std::vector<Slot> s;
  auto add = [&](Role r, int layer, std::string name, std::vector<int64_t> shape, bool m) {
    s.push_back(Slot{r, layer, std::move(name), std::move(shape), m});
  };
  add(Role::EmbedIn, -1, "gpt_neox.embed_in.weight", {v, h}, true);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "gpt_neox.layers." + std::to_string(l) + ".";
    add(Role::Ln1W, l, p + "input_layernorm.weight", {h}, false);
    add(Role::Ln1B, l, p + "input_layernorm.bias", {h}, false);
    add(Role::QkvW, l, p + "attention.query_key_value.weight", {3 * h, h}, true);
    add(Role::QkvB, l, p + "attention.query_key_value.bias", {3 * h}, false);
    add(Role::DenseW, l, p + "attention.dense.weight", {h, h}, true);
    add(Role::DenseB, l, p + "attention.dense.bias", {h}, false);
    add(Role::Ln2W, l, p + "post_attention_layernorm.weight", {h}, false);
    add(Role::Ln2B, l, p + "post_attention_layernorm.bias", {h}, false);
    add(Role::FcInW, l, p + "mlp.dense_h_to_4h.weight", {i4, h}, true);
    add(Role::FcInB, l, p + "mlp.dense_h_to_4h.bias", {i4}, false);
    add(Role::FcOutW, l, p + "mlp.dense_4h_to_h.weight", {h, i4}, true);
    add(Role::FcOutB, l, p + "mlp.dense_4h_to_h.bias", {h}, false);
  }
  add(Role::FinalLnW, -1, "gpt_neox.final_layer_norm.weight", {h}, false);
  add(Role::FinalLnB, -1, "gpt_neox.final_layer_norm.bias", {h}, false);
  add(Role::EmbedOut, -1, "embed_out.weight", {v, h}, true);
  total = 0;
  stored = 0;
  for (auto& x : s) {
    x.numel = 1;
    for (int64_t d : x.shape) x.numel *= static_cast<size_t>(d);
    x.bytes = x.numel * (x.matrix ? dtype_size(dtype) : 4);
    x.offset = total;
    total = align_up(total + x.bytes, kAlign);
    stored += x.bytes;
  }
  return s;
}

std::unique_ptr<ModelWeights> make_weights(const ModelConfig& c, DType dtype,
                                           const std::vector<Slot>& slots, size_t total,
                                           size_t stored) {
  auto w = std::make_unique<ModelWeights>();
  w->config = c;
  w->dtype = dtype;
  w->arena = std::make_unique<WeightArena>(total);
  w->stored_bytes = stored;
  w->layers.resize(static_cast<size_t>(c.n_layers));
  uint8_t* base = w->arena->data();
  for (const auto& s : slots) {
    void* p = base + s.offset;
    const auto* f = static_cast<const float*>(p);
    Matrix m{dtype, s.shape[0], s.shape.size() > 1 ? s.shape[1] : 1, p};
    LayerWeights* L = s.layer >= 0 ? &w->layers[static_cast<size_t>(s.layer)] : nullptr;
    switch (s.role) {
      case Role::EmbedIn: w->embed_in = m; break;
      case Role::EmbedOut: w->embed_out = m; break;
      case Role::FinalLnW: w->final_ln_w = f; break;
      case Role::FinalLnB: w->final_ln_b = f; break;
      case Role::Ln1W: L->ln1_w = f; break;
      case Role::Ln1B: L->ln1_b = f; break;
      case Role::Ln2W: L->ln2_w = f; break;
      case Role::Ln2B: L->ln2_b = f; break;
      case Role::QkvW: L->qkv = m; break;
      case Role::QkvB: L->qkv_b = f; break;
      case Role::DenseW: L->attn_out = m; break;
      case Role::DenseB: L->attn_out_b = f; break;
      case Role::FcInW: L->fc_in = m; break;
      case Role::FcInB: L->fc_in_b = f; break;
      case Role::FcOutW: L->fc_out = m; break;
      case Role::FcOutB: L->fc_out_b = f; break;
    }
  }
  return w;
}

// A slice [begin, end) of one slot's elements: the unit of parallel work.
struct Chunk {
  size_t slot, begin, end;
};

std::vector<Chunk> split(const std::vector<Slot>& slots) {
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < slots.size(); ++i)
    for (size_t b = 0; b < slots[i].numel; b += kGrain)
      chunks.push_back({i, b, std::min(slots[i].numel, b + kGrain)});
  return chunks;
}

int resolve_threads(int threads) {
  if (threads > 0) return threads;
  unsigned hw = std::thread::hardware_concurrency();
  return hw ? static_cast<int>(hw) : 1;
}

// Runs fn(i) for i in [0, n) on `threads` threads pulling from a shared counter.
template <class F>
void parallel_for(size_t n, int threads, F&& fn) {
  const size_t t = std::min(static_cast<size_t>(threads), n);
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mu;
  auto worker = [&] {
    try {
      for (size_t i; (i = next.fetch_add(1)) < n;) fn(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (!error) error = std::current_exception();
      next.store(n);
    }
  };
  std::vector<std::thread> pool;
  for (size_t k = 1; k < t; ++k) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

// ---- conversion -----------------------------------------------------------------------------

// Typed loop with the element conversion inlined, so that it vectorises. The source may be
// unaligned (safetensors offsets need not be), hence memcpy loads.
template <class Src, class Dst, class F>
inline void convert_typed(const uint8_t* src, uint8_t* dst, size_t n, F f) {
  Dst* out = reinterpret_cast<Dst*>(dst);  // the arena is aligned
  for (size_t i = 0; i < n; ++i) {
    Src x;
    std::memcpy(&x, src + i * sizeof(Src), sizeof(Src));
    out[i] = f(x);
  }
}

// Converts n elements; identical types are copied bit for bit.
KVC_MULTIVERSION void convert(SafeDType src_type, const uint8_t* src, DType dst_type, uint8_t* dst,
                              size_t n) {
  using cvt::bf16_to_f32;
  using cvt::f16_to_f32;
  using cvt::f32_to_bf16;
  using cvt::f32_to_f16;
  const auto same = [](auto x) { return x; };
  switch (src_type) {
    case SafeDType::F32:
      switch (dst_type) {
        case DType::F32: return convert_typed<float, float>(src, dst, n, same);
        case DType::BF16:
          return convert_typed<float, uint16_t>(src, dst, n,
                                                [](float x) { return f32_to_bf16(x); });
        case DType::F16:
          return convert_typed<float, uint16_t>(src, dst, n, [](float x) { return f32_to_f16(x); });
      }
      break;
    case SafeDType::BF16:
      switch (dst_type) {
        case DType::F32:
          return convert_typed<uint16_t, float>(src, dst, n,
                                                [](uint16_t x) { return bf16_to_f32(x); });
        case DType::BF16: return convert_typed<uint16_t, uint16_t>(src, dst, n, same);
        case DType::F16:
          return convert_typed<uint16_t, uint16_t>(
              src, dst, n, [](uint16_t x) { return f32_to_f16(bf16_to_f32(x)); });
      }
      break;
    case SafeDType::F16:
      switch (dst_type) {
        case DType::F32:
          return convert_typed<uint16_t, float>(src, dst, n,
                                                [](uint16_t x) { return f16_to_f32(x); });
        case DType::BF16:
          return convert_typed<uint16_t, uint16_t>(
              src, dst, n, [](uint16_t x) { return f32_to_bf16(f16_to_f32(x)); });
        case DType::F16: return convert_typed<uint16_t, uint16_t>(src, dst, n, same);
      }
      break;
    default: break;
  }
  fail(KVC_ERR_INTERNAL, "convert: unexpected source dtype");
}

// ---- sources --------------------------------------------------------------------------------

struct Located {
  const SafetensorsFile* file;
  const TensorInfo* info;
};

struct Sources {
  std::string label;  // what error messages name: model.safetensors or the index
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::unordered_map<std::string, Located> tensors;
};

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) fail(KVC_ERR_IO, p.string() + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(KVC_ERR_IO, p.string() + ": read error");
  return ss.str();
}

void add_file(Sources& src, std::unique_ptr<SafetensorsFile> f) {
  for (const auto& t : f->tensors()) {
    auto [it, fresh] = src.tensors.emplace(t.name, Located{f.get(), &t});
    if (!fresh)
      fail(KVC_ERR_FORMAT, src.label + ": tensor '" + t.name + "' is stored twice, in " +
                               it->second.file->path() + " and in " + f->path());
  }
  src.files.push_back(std::move(f));
}

Sources open_sharded(const fs::path& folder, const fs::path& index_path) {
  using nlohmann::json;
  Sources src;
  src.label = index_path.string();
  const std::string text = read_text(index_path);
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(KVC_ERR_FORMAT, src.label + ": not valid JSON");
  if (!j.is_object()) fail(KVC_ERR_FORMAT, src.label + ": expected a JSON object");
  auto wm = j.find("weight_map");
  if (wm == j.end()) fail(KVC_ERR_FORMAT, src.label + ": key 'weight_map' is missing");
  if (!wm->is_object())
    fail(KVC_ERR_FORMAT, src.label + ": key 'weight_map' is a " + wm->type_name() +
                             ", expected an object {tensor: shard file}");

  std::map<std::string, std::string> first_tensor;  // shard -> a tensor it should hold
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string())
      fail(KVC_ERR_FORMAT,
           src.label + ": weight_map entry '" + it.key() + "' is not a file name string");
    const std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
      fail(KVC_ERR_FORMAT, src.label + ": weight_map entry '" + it.key() + "' names shard '" +
                               shard + "'; expected a file name inside the model folder");
    first_tensor.emplace(shard, it.key());
  }
  for (const auto& [shard, tensor] : first_tensor) {
    const fs::path p = folder / shard;
    std::error_code ec;
    if (!fs::exists(p, ec))
      fail(KVC_ERR_IO, src.label + ": shard '" + shard + "' (listed for tensor '" + tensor +
                           "') does not exist in " + folder.string());
    add_file(src, SafetensorsFile::open(p.string()));
  }
  // Every entry must point at the shard that really holds the tensor.
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    const std::string shard = it.value().get<std::string>();
    auto loc = src.tensors.find(it.key());
    if (loc == src.tensors.end() || fs::path(loc->second.file->path()).filename().string() != shard)
      fail(KVC_ERR_FORMAT, src.label + ": weight_map puts tensor '" + it.key() + "' in '" + shard +
                               "', but that shard does not contain it");
  }
  return src;
}

Sources open_sources(const std::string& folder_str) {
  const fs::path folder(folder_str);
  std::error_code ec;
  if (!fs::exists(folder, ec)) fail(KVC_ERR_IO, "model folder '" + folder_str + "' does not exist");
  if (!fs::is_directory(folder, ec))
    fail(KVC_ERR_IO, "model folder '" + folder_str + "' is not a directory");
  const fs::path single = folder / "model.safetensors";
  const fs::path index = folder / "model.safetensors.index.json";
  if (fs::exists(single, ec)) {
    Sources src;
    src.label = single.string();
    add_file(src, SafetensorsFile::open(single.string()));
    return src;
  }
  if (fs::exists(index, ec)) return open_sharded(folder, index);
  std::string hint;
  if (fs::exists(folder / "pytorch_model.bin", ec))
    hint = "; it has pytorch_model.bin, a pickle that must first be converted to safetensors";
  fail(KVC_ERR_IO, "model folder '" + folder_str +
                       "' has neither model.safetensors nor model.safetensors.index.json" + hint);
}

// Non-weight buffers that old GPT-NeoX state dicts carry (causal mask, rotary frequencies).
bool is_known_buffer(const std::string& n) {
  auto ends = [&](std::string_view s) { return n.ends_with(s); };
  return ends(".attention.bias") || ends(".attention.masked_bias") || ends("rotary_emb.inv_freq");
}

// A tensor we do not expect: explain whether it is a layer beyond the config or a foreign name.
[[noreturn]] void unexpected_tensor(const std::string& file, const std::string& name,
                                    const ModelConfig& c) {
  const std::string prefix = "gpt_neox.layers.";
  if (name.starts_with(prefix)) {
    const int layer = std::atoi(name.c_str() + prefix.size());
    if (layer >= c.n_layers)
      fail(KVC_ERR_FORMAT, file + ": tensor '" + name + "' belongs to layer " +
                               std::to_string(layer) + ", but the config has num_hidden_layers " +
                               std::to_string(c.n_layers));
  }
  fail(KVC_ERR_FORMAT, file + ": unexpected tensor '" + name +
                           "' (not a GPT-NeoX weight kvc knows; another architecture?)");
}

}  // namespace

// ---- WeightArena ------------------------------------------------------------------------------

WeightArena::WeightArena(size_t bytes) : size_(bytes) {
  // Anonymous pages: the kernel zero-fills them at first touch, which happens in the parallel
  // conversion, so page faulting is spread over the threads. No MADV_HUGEPAGE: with the common
  // THP "defrag=madvise" setting, it makes every fault compact memory synchronously (measured
  // 6x slower to fill); the kernel may still use huge pages where THP is "always".
  map_size_ = align_up(std::max<size_t>(bytes, 1), 4096);
  void* m = ::mmap(nullptr, map_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED)
    fail(KVC_ERR_OUT_OF_MEMORY, "cannot allocate " + std::to_string(bytes) + " bytes of weights");
  map_ = m;
  base_ = static_cast<uint8_t*>(m);  // page aligned, hence 64-byte aligned
}

WeightArena::~WeightArena() {
  if (map_) ::munmap(map_, map_size_);
}

DType parse_dtype(const std::string& s) {
  if (s == "float32" || s == "fp32" || s == "f32") return DType::F32;
  if (s == "bfloat16" || s == "bf16") return DType::BF16;
  if (s == "float16" || s == "fp16" || s == "f16" || s == "half") return DType::F16;
  fail(KVC_ERR_INVALID_ARGUMENT,
       "unknown weight dtype '" + s + "'; expected float32, bfloat16 or float16");
}

// ---- loading ----------------------------------------------------------------------------------

std::unique_ptr<ModelWeights> load_weights(const std::string& folder, const ModelConfig& config,
                                           DType dtype, int threads) {
  Sources src = open_sources(folder);
  size_t total = 0, stored = 0;
  std::vector<Slot> slots = plan_slots(config, dtype, total, stored);

  // Validate everything before allocating or converting anything.
  std::unordered_map<std::string, size_t> wanted;
  for (size_t i = 0; i < slots.size(); ++i) wanted.emplace(slots[i].name, i);
  std::vector<std::string> names;
  for (const auto& [name, loc] : src.tensors) names.push_back(name);
  std::sort(names.begin(), names.end());  // deterministic: the first offender in name order
  for (const auto& name : names) {
    if (wanted.count(name) || is_known_buffer(name)) continue;
    if (name.ends_with(".weight") || name.ends_with(".bias"))
      unexpected_tensor(src.tensors.at(name).file->path(), name, config);
  }
  std::vector<Located> where(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    const Slot& s = slots[i];
    auto it = src.tensors.find(s.name);
    if (it == src.tensors.end())
      fail(KVC_ERR_NOT_FOUND, src.label + ": missing weight '" + s.name + "' (expected shape " +
                                  shape_str(s.shape) + ")");
    const TensorInfo& t = *it->second.info;
    const std::string file = it->second.file->path();
    if (t.dtype != SafeDType::F32 && t.dtype != SafeDType::F16 && t.dtype != SafeDType::BF16)
      fail(KVC_ERR_UNSUPPORTED, file + ": unsupported dtype " + t.dtype_name + " for tensor '" +
                                    s.name + "' (expected F32, F16 or BF16)");
    if (t.shape != s.shape)
      fail(KVC_ERR_FORMAT, file + ": tensor '" + s.name + "' has shape " + t.shape_str() +
                               ", expected " + shape_str(s.shape) + " from the config");
    where[i] = it->second;
  }

  auto w = make_weights(config, dtype, slots, total, stored);
  w->source = folder;
  uint8_t* base = w->arena->data();
  const std::vector<Chunk> chunks = split(slots);
  parallel_for(chunks.size(), resolve_threads(threads), [&](size_t k) {
    const Chunk& c = chunks[k];
    const Slot& s = slots[c.slot];
    const TensorInfo& t = *where[c.slot].info;
    const size_t ssize = safe_dtype_size(t.dtype);
    const DType out = s.matrix ? dtype : DType::F32;
    convert(t.dtype, t.data + c.begin * ssize, out, base + s.offset + c.begin * dtype_size(out),
            c.end - c.begin);
    // The source pages are done with: let them go so RSS holds one copy, not two.
    TensorInfo part = t;
    part.data = t.data + c.begin * ssize;
    part.nbytes = (c.end - c.begin) * ssize;
    where[c.slot].file->release(part);
  });
  return w;
}

// ---- synthetic ----------------------------------------------------------------------------------

namespace {

inline uint64_t mix64(uint64_t z) {  // splitmix64 finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Counter-based: element i of a tensor depends only on (key, i). The sum of four uniform 16-bit
// fields (Irwin-Hall) is a cheap bell curve with mean 131070 and std 65536 / sqrt(3). Values go
// through a small float buffer so that the store loop is a plain vectorisable conversion.
KVC_MULTIVERSION void generate(uint64_t key, size_t begin, size_t end, float std_dev, DType out,
                               uint8_t* dst) {
  const float scale = std_dev / 37837.23f;
  constexpr size_t kBlock = 1024;
  float buf[kBlock];
  for (size_t b = begin; b < end; b += kBlock) {
    const size_t n = std::min(kBlock, end - b);
    for (size_t j = 0; j < n; ++j) {
      const uint64_t r = mix64(key + (b + j + 1) * 0x9e3779b97f4a7c15ull);
      const int32_t s = static_cast<int32_t>((r & 0xffff) + ((r >> 16) & 0xffff) +
                                             ((r >> 32) & 0xffff) + (r >> 48)) -
                        131070;
      buf[j] = static_cast<float>(s) * scale;
    }
    const size_t at = b - begin;
    switch (out) {
      case DType::F32: std::memcpy(dst + 4 * at, buf, 4 * n); break;
      case DType::BF16: {
        uint16_t* d = reinterpret_cast<uint16_t*>(dst) + at;
        for (size_t j = 0; j < n; ++j) d[j] = cvt::f32_to_bf16(buf[j]);
        break;
      }
      case DType::F16: {
        uint16_t* d = reinterpret_cast<uint16_t*>(dst) + at;
        for (size_t j = 0; j < n; ++j) d[j] = cvt::f32_to_f16(buf[j]);
        break;
      }
    }
  }
}

}  // namespace

std::unique_ptr<ModelWeights> synthetic_weights(const ModelConfig& config, DType dtype,
                                                uint64_t seed, int threads) {
  size_t total = 0, stored = 0;
  std::vector<Slot> slots = plan_slots(config, dtype, total, stored);
  auto w = make_weights(config, dtype, slots, total, stored);
  w->source = "synthetic:" + config.name + " seed " + std::to_string(seed);
  uint8_t* base = w->arena->data();
  const std::vector<Chunk> chunks = split(slots);
  parallel_for(chunks.size(), resolve_threads(threads), [&](size_t k) {
    const Chunk& c = chunks[k];
    const Slot& s = slots[c.slot];
    const DType out = s.matrix ? dtype : DType::F32;
    uint8_t* dst = base + s.offset + c.begin * dtype_size(out);
    const size_t n = c.end - c.begin;
    const bool ln = s.role == Role::Ln1W || s.role == Role::Ln1B || s.role == Role::Ln2W ||
                    s.role == Role::Ln2B || s.role == Role::FinalLnW || s.role == Role::FinalLnB;
    if (ln) {
      const bool weight = s.role == Role::Ln1W || s.role == Role::Ln2W || s.role == Role::FinalLnW;
      std::fill_n(reinterpret_cast<float*>(dst), n, weight ? 1.0f : 0.0f);
      return;
    }
    const uint64_t key = mix64(seed ^ mix64(0x6b7663ull + c.slot));
    generate(key, c.begin, c.end, s.matrix ? 0.02f : 0.01f, out, dst);
  });
  return w;
}

}  // namespace kvc
