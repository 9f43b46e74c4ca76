// Versioned structs at the boundary: every struct starts with `size_t struct_size`. A caller
// built against an older header passes a smaller struct: we read (or write) only the fields it
// knows and use defaults for the rest; a struct larger than ours keeps its unknown tail.
#pragma once

#include <algorithm>
#include <cstring>
#include <string>

#include "common/error.h"

namespace kvc {

// Copies the caller's struct over `defaults` (whose struct_size is ours).
template <class T>
T read_struct(const T* in, const T& defaults, const char* type_name) {
  T out = defaults;
  if (in == nullptr) return out;
  if (in->struct_size < sizeof(size_t))
    fail(KVC_ERR_INVALID_ARGUMENT, std::string(type_name) + ".struct_size is " +
                                       std::to_string(in->struct_size) +
                                       "; set it to sizeof(" + type_name + ") (use the _init function)");
  std::memcpy(static_cast<void*>(&out), in, std::min(in->struct_size, sizeof(T)));
  out.struct_size = sizeof(T);
  return out;
}

// Writes `value` into the caller's struct, up to the size the caller declared.
template <class T>
void write_struct(T* out, const T& value, const char* type_name) {
  if (out->struct_size < sizeof(size_t))
    fail(KVC_ERR_INVALID_ARGUMENT, std::string(type_name) + ".struct_size is " +
                                       std::to_string(out->struct_size) +
                                       "; set it to sizeof(" + type_name + ") (use the _init function)");
  const size_t caller_size = out->struct_size;
  std::memcpy(static_cast<void*>(out), &value, std::min(caller_size, sizeof(T)));
  out->struct_size = caller_size;
}

// The *_init_size functions: fills the caller's struct of `size` bytes with `defaults` (the
// fields both sides know; zeros in a newer caller's extra tail) and sets struct_size = size.
template <class T>
void init_struct(T* out, const T& defaults, size_t size) {
  if (out == nullptr || size < sizeof(size_t)) return;
  auto* bytes = reinterpret_cast<unsigned char*>(out);
  std::memcpy(bytes, &defaults, std::min(size, sizeof(T)));
  if (size > sizeof(T)) std::memset(bytes + sizeof(T), 0, size - sizeof(T));
  out->struct_size = size;
}

}  // namespace kvc
