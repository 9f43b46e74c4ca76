// The C ABI boundary: every kvc_* function body runs inside kvc::guarded(), which turns the
// core's exceptions into a kvc_status plus the thread-local message of kvc_last_error().
#pragma once

#include <new>
#include <string>

#include "common/error.h"
#include "kvc/kvc.h"

namespace kvc {

void set_last_error(std::string message);
void clear_last_error();
const char* last_error_cstr();

template <class F>
kvc_status guarded(F&& body) noexcept {
  try {
    body();
    return KVC_OK;
  } catch (const Error& e) {
    set_last_error(e.what());
    return e.status();
  } catch (const std::bad_alloc&) {
    set_last_error("out of memory");
    return KVC_ERR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_last_error(std::string("internal error: ") + e.what());
    return KVC_ERR_INTERNAL;
  } catch (...) {
    set_last_error("internal error: unknown exception");
    return KVC_ERR_INTERNAL;
  }
}

// Argument checks at the boundary: a NULL handle or pointer is a caller error, not a crash.
inline void require_arg(const void* p, const char* function, const char* name) {
  if (p == nullptr)
    throw Error(KVC_ERR_INVALID_ARGUMENT, std::string(function) + ": argument '" + name +
                                              "' must not be NULL");
}

}  // namespace kvc
