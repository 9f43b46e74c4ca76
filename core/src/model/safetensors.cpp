#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace kvc {
namespace {

using nlohmann::json;

struct DTypeEntry {
  const char* name;
  SafeDType dtype;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {"F64", SafeDType::F64, 8},         {"F32", SafeDType::F32, 4},
    {"F16", SafeDType::F16, 2},         {"BF16", SafeDType::BF16, 2},
    {"I64", SafeDType::I64, 8},         {"I32", SafeDType::I32, 4},
    {"I16", SafeDType::I16, 2},         {"I8", SafeDType::I8, 1},
    {"U64", SafeDType::U64, 8},         {"U32", SafeDType::U32, 4},
    {"U16", SafeDType::U16, 2},         {"U8", SafeDType::U8, 1},
    {"BOOL", SafeDType::BOOL, 1},       {"F8_E4M3", SafeDType::F8_E4M3, 1},
    {"F8_E5M2", SafeDType::F8_E5M2, 1},
};

// The format caps the header at 100 MB; anything larger is a corrupt length field.
constexpr uint64_t kMaxHeader = 100u << 20;

std::string short_json(const json& v) {
  std::string s = v.dump();
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

bool as_u64(const json& v, uint64_t& out) {
  if (v.is_number_unsigned()) {
    out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

}  // namespace

const char* safe_dtype_name(SafeDType t) {
  for (const auto& e : kDTypes)
    if (e.dtype == t) return e.name;
  return "?";
}

size_t safe_dtype_size(SafeDType t) {
  for (const auto& e : kDTypes)
    if (e.dtype == t) return e.size;
  return 0;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorInfo::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(KVC_ERR_IO, path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    int err = errno;
    ::close(fd);
    fail(KVC_ERR_IO,
         path + ": not a regular file" + (err ? std::string(" (") + std::strerror(err) + ")" : ""));
  }
  f->size_ = static_cast<size_t>(st.st_size);
  if (f->size_ < 8) {
    ::close(fd);
    fail(KVC_ERR_FORMAT, path + ": file is " + std::to_string(f->size_) +
                             " bytes, too short for the 8-byte safetensors header length");
  }
  void* m = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  int err = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (m == MAP_FAILED) fail(KVC_ERR_IO, path + ": mmap failed (" + std::strerror(err) + ")");
  f->map_ = m;
  f->parse_header();
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, size_);
}

void SafetensorsFile::parse_header() {
  const auto* base = static_cast<const uint8_t*>(map_);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | base[i];  // little-endian on any host
  if (n > size_ - 8 || n > kMaxHeader)
    fail(KVC_ERR_FORMAT, path_ + ": header length " + std::to_string(n) + " exceeds the file (" +
                             std::to_string(size_) +
                             " bytes in total; truncated or not a safetensors file?)");
  const char* text = reinterpret_cast<const char*>(base + 8);
  json h = json::parse(text, text + n, nullptr, /*allow_exceptions=*/false);
  if (h.is_discarded())
    fail(KVC_ERR_FORMAT,
         path_ + ": safetensors header (" + std::to_string(n) + " bytes) is not valid JSON");
  if (!h.is_object())
    fail(KVC_ERR_FORMAT,
         path_ + ": safetensors header is a JSON " + h.type_name() + ", expected an object");

  const uint8_t* data = base + 8 + n;
  const uint64_t data_size = size_ - 8 - n;
  tensors_.reserve(h.size());
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& e = it.value();
    if (name == "__metadata__") {
      if (!e.is_object())
        fail(KVC_ERR_FORMAT,
             path_ + ": __metadata__ is " + short_json(e) + ", expected an object of strings");
      for (auto m = e.begin(); m != e.end(); ++m) {
        if (!m.value().is_string())
          fail(KVC_ERR_FORMAT, path_ + ": __metadata__ entry '" + m.key() + "' is " +
                                   short_json(m.value()) + ", expected a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = path_ + ": tensor '" + name + "'";
    if (!e.is_object())
      fail(KVC_ERR_FORMAT, where + " is " + short_json(e) + ", expected an object");

    TensorInfo t;
    t.name = name;
    auto dt = e.find("dtype");
    if (dt == e.end() || !dt->is_string())
      fail(KVC_ERR_FORMAT, where + ": 'dtype' is missing or not a string");
    t.dtype_name = dt->get<std::string>();
    const DTypeEntry* entry = nullptr;
    for (const auto& d : kDTypes)
      if (t.dtype_name == d.name) entry = &d;
    if (!entry) fail(KVC_ERR_UNSUPPORTED, where + ": unknown dtype '" + t.dtype_name + "'");
    t.dtype = entry->dtype;

    auto sh = e.find("shape");
    if (sh == e.end() || !sh->is_array())
      fail(KVC_ERR_FORMAT, where + ": 'shape' is missing or not a list");
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      uint64_t v = 0;
      if (!as_u64(d, v) || v > (uint64_t{1} << 62))
        fail(KVC_ERR_FORMAT,
             where + ": shape " + short_json(*sh) + " must hold non-negative integers");
      if (__builtin_mul_overflow(numel, v, &numel))
        fail(KVC_ERR_FORMAT, where + ": shape " + short_json(*sh) + " overflows");
      t.shape.push_back(static_cast<int64_t>(v));
    }
    uint64_t expected = 0;
    if (__builtin_mul_overflow(numel, entry->size, &expected))
      fail(KVC_ERR_FORMAT, where + ": shape " + short_json(*sh) + " overflows");

    auto off = e.find("data_offsets");
    uint64_t begin = 0, end = 0;
    if (off == e.end() || !off->is_array() || off->size() != 2 || !as_u64((*off)[0], begin) ||
        !as_u64((*off)[1], end))
      fail(KVC_ERR_FORMAT, where +
                               ": 'data_offsets' must be [begin, end] with non-negative "
                               "integers, found " +
                               (off == e.end() ? std::string("nothing") : short_json(*off)));
    if (begin > end)
      fail(KVC_ERR_FORMAT, where + ": data_offsets [" + std::to_string(begin) + ", " +
                               std::to_string(end) + "] has begin > end");
    if (end > data_size)
      fail(KVC_ERR_FORMAT, where + ": data_offsets [" + std::to_string(begin) + ", " +
                               std::to_string(end) + "] lie outside the data area of " +
                               std::to_string(data_size) + " bytes (file truncated?)");
    if (end - begin != expected)
      fail(KVC_ERR_FORMAT, where + ": data_offsets span " + std::to_string(end - begin) +
                               " bytes but shape " + t.shape_str() + " of " + t.dtype_name +
                               " needs " + std::to_string(expected));
    t.offset = begin;
    t.nbytes = end - begin;
    t.data = data + begin;
    tensors_.push_back(std::move(t));
  }

  std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.offset != b.offset ? a.offset < b.offset : a.nbytes < b.nbytes;
  });
  for (size_t i = 1; i < tensors_.size(); ++i) {
    const TensorInfo& a = tensors_[i - 1];
    const TensorInfo& b = tensors_[i];
    // Empty tensors occupy no bytes and cannot overlap anything.
    if (a.nbytes && b.nbytes && a.offset + a.nbytes > b.offset)
      fail(KVC_ERR_FORMAT, path_ + ": tensors '" + a.name + "' [" + std::to_string(a.offset) +
                               ", " + std::to_string(a.offset + a.nbytes) + ") and '" + b.name +
                               "' [" + std::to_string(b.offset) + ", " +
                               std::to_string(b.offset + b.nbytes) + ") overlap");
  }
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);

  ::madvise(map_, size_, MADV_SEQUENTIAL);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void SafetensorsFile::release(const TensorInfo& t) const {
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  uintptr_t b = reinterpret_cast<uintptr_t>(t.data);
  uintptr_t e = b + t.nbytes;
  b = (b + page - 1) & ~(page - 1);
  e &= ~(page - 1);
  if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
}

}  // namespace kvc
