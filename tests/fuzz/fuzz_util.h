// Shared pieces of the fuzz targets: a byte reader for structured inputs and the rule that
// kvc::Error is the one expected way for a parser to reject its input. Any other exception
// escapes to libFuzzer, which reports it (with the input) as a finding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "common/error.h"

namespace kvc::fuzz {

// Reads little pieces off the front of the input; returns zeros once it is used up.
class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : p_(data), n_(size) {}
  uint8_t u8() {
    if (n_ == 0) return 0;
    --n_;
    return *p_++;
  }
  uint32_t u32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(u8()) << (8 * i);
    return v;
  }
  // A value in [lo, hi].
  int64_t range(int64_t lo, int64_t hi) {
    const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
    return lo + static_cast<int64_t>(u32() % span);
  }
  std::string_view rest() {
    std::string_view s(reinterpret_cast<const char*>(p_), n_);
    p_ += n_;
    n_ = 0;
    return s;
  }
  size_t left() const { return n_; }

 private:
  const uint8_t* p_;
  size_t n_;
};

// A property the code under test promised and broke: abort so libFuzzer keeps the input.
[[noreturn]] inline void broken(const std::string& what) {
  std::fprintf(stderr, "fuzz property violated: %s\n", what.c_str());
  std::abort();
}

// An accepted error must carry a message (every kvc error names what was wrong).
inline void check_error(const kvc::Error& e) {
  if (e.status() == KVC_OK) broken("kvc::Error with status KVC_OK");
  if (std::strlen(e.what()) == 0) broken("kvc::Error without a message");
}

}  // namespace kvc::fuzz
