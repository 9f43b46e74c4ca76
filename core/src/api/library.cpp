// Library-wide entry points: versions, status names and the thread-local error message.
#include <string>

#include "api/guard.h"
#include "kvc/kvc.h"

namespace kvc {
namespace {
thread_local std::string t_last_error;
}
void set_last_error(std::string message) { t_last_error = std::move(message); }
void clear_last_error() { t_last_error.clear(); }
const char* last_error_cstr() { return t_last_error.c_str(); }
}  // namespace kvc

extern "C" {

KVC_API uint32_t kvc_abi_version(void) {
  return (static_cast<uint32_t>(KVC_ABI_VERSION_MAJOR) << 16) | KVC_ABI_VERSION_MINOR;
}

KVC_API const char* kvc_version_string(void) { return KVC_VERSION_STRING; }

KVC_API const char* kvc_last_error(void) { return kvc::last_error_cstr(); }

KVC_API const char* kvc_status_name(kvc_status status) {
  switch (status) {
    case KVC_OK: return "KVC_OK";
    case KVC_ERR_INVALID_ARGUMENT: return "KVC_ERR_INVALID_ARGUMENT";
    case KVC_ERR_IO: return "KVC_ERR_IO";
    case KVC_ERR_FORMAT: return "KVC_ERR_FORMAT";
    case KVC_ERR_UNSUPPORTED: return "KVC_ERR_UNSUPPORTED";
    case KVC_ERR_NOT_FOUND: return "KVC_ERR_NOT_FOUND";
    case KVC_ERR_OUT_OF_RANGE: return "KVC_ERR_OUT_OF_RANGE";
    case KVC_ERR_BUFFER_TOO_SMALL: return "KVC_ERR_BUFFER_TOO_SMALL";
    case KVC_ERR_POLICY: return "KVC_ERR_POLICY";
    case KVC_ERR_BACKEND: return "KVC_ERR_BACKEND";
    case KVC_ERR_OUT_OF_MEMORY: return "KVC_ERR_OUT_OF_MEMORY";
    case KVC_ERR_INTERNAL: return "KVC_ERR_INTERNAL";
  }
  return "KVC_ERR_UNKNOWN";
}

}  // extern "C"
