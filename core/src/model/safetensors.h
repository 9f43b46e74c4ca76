// Read-only, memory-mapped safetensors file with a fully validated header.
//
// Layout: 8-byte little-endian header length N, N bytes of JSON header, then the data area.
// Every tensor entry is checked before any data is touched: known dtype, non-negative shape,
// data_offsets within the data area and consistent with shape * dtype size, no overlaps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace kvc {

// Every dtype the safetensors format defines. Only F32/F16/BF16 can hold weights; the others
// are recognised so that their sizes can be validated and errors can name them.
enum class SafeDType : uint8_t {
  F64,
  F32,
  F16,
  BF16,
  I64,
  I32,
  I16,
  I8,
  U64,
  U32,
  U16,
  U8,
  BOOL,
  F8_E4M3,
  F8_E5M2
};
const char* safe_dtype_name(SafeDType t);
size_t safe_dtype_size(SafeDType t);

struct TensorInfo {
  std::string name;
  SafeDType dtype = SafeDType::F32;
  std::string dtype_name;  // as written in the header, e.g. "BF16"
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // inside the mapping; no alignment guarantee
  size_t nbytes = 0;
  size_t offset = 0;  // byte offset of `data` within the data area

  int64_t numel() const;
  std::string shape_str() const;  // e.g. "[384, 64]"
};

class SafetensorsFile {
 public:
  // KVC_ERR_IO if the file cannot be opened or mapped; KVC_ERR_FORMAT for a malformed header;
  // KVC_ERR_UNSUPPORTED for a dtype string the format does not define.
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const TensorInfo* find(const std::string& name) const;
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in data order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }
  size_t file_size() const { return size_; }

  // Tells the kernel a tensor's pages are no longer needed (after conversion) so that loading
  // a large checkpoint does not keep the whole file resident. The data stays readable.
  void release(const TensorInfo& t) const;

 private:
  SafetensorsFile() = default;
  void parse_header();

  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace kvc
