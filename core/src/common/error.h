// Internal error type of the core. Every failure inside core/ is thrown as kvc::Error and
// converted at the C ABI boundary (core/src/api/) into a kvc_status plus the thread-local
// message returned by kvc_last_error(). Nothing else may cross the boundary.
#pragma once

#include <stdexcept>
#include <string>

#include "kvc/kvc.h"

namespace kvc {

class Error : public std::runtime_error {
 public:
  Error(kvc_status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  kvc_status status() const noexcept { return status_; }

 private:
  kvc_status status_;
};

// Throw helpers: keep call sites short and the message first.
[[noreturn]] inline void fail(kvc_status status, const std::string& message) {
  throw Error(status, message);
}
inline void require(bool condition, kvc_status status, const std::string& message) {
  if (!condition) throw Error(status, message);
}

}  // namespace kvc
