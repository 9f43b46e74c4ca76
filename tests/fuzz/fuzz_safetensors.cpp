// The safetensors header and tensor table: SafetensorsFile::open on arbitrary bytes. The input
// is written to an in-memory file (memfd), so the real open + mmap path runs unchanged.
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "model/safetensors.h"

namespace {

int memory_file() {
  static const int fd = [] {
    const int f = ::memfd_create("kvc-fuzz.safetensors", MFD_CLOEXEC);
    if (f < 0) kvc::fuzz::broken("memfd_create failed");
    return f;
  }();
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = memory_file();
  if (::ftruncate(fd, 0) != 0) kvc::fuzz::broken("ftruncate failed");
  size_t done = 0;
  while (done < size) {
    const ssize_t w = ::pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (w <= 0) kvc::fuzz::broken("pwrite failed");
    done += static_cast<size_t>(w);
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  try {
    auto file = kvc::SafetensorsFile::open(path);
    // Accepted: every tensor must lie inside the file, match its shape, and be findable.
    const auto* base = static_cast<const uint8_t*>(nullptr);
    for (const auto& t : file->tensors()) {
      if (!base) base = t.data - t.offset;
      if (t.offset + t.nbytes > file->file_size()) kvc::fuzz::broken("tensor past the file end");
      if (static_cast<uint64_t>(t.numel()) * kvc::safe_dtype_size(t.dtype) != t.nbytes)
        kvc::fuzz::broken("tensor size differs from shape * dtype size");
      if (file->find(t.name) != &t) kvc::fuzz::broken("find() does not return the tensor");
      volatile uint8_t sink = 0;
      if (t.nbytes) sink = sink + t.data[0] + t.data[t.nbytes - 1];  // touch both ends
    }
  } catch (const kvc::Error& e) {
    kvc::fuzz::check_error(e);
  }
  return 0;
}
