// Opening the shared objects kvc loads at run time: policy plugins (libkvc_policy_<name>.so)
// and the CUDA backend (libkvc_cuda.so). One loader (Boost.DLL), one set of checks and one
// wording for what went wrong, whatever the kind of library.
//
// A library is opened with RTLD_NOW | RTLD_LOCAL and never closed: descriptors, providers and
// the code behind them stay valid for the life of the process.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kvc/kvc.h"

namespace kvc {

class PluginLibrary {
 public:
  // Opens `path`. `kind` names the kind of library in messages ("policy plugin", "CUDA
  // backend"); every failure is a kvc::Error with `status` that names the path and says why:
  // the file does not exist, is a folder, is not a shared object (no ELF header), or the
  // dynamic loader refused it (its own message, e.g. a missing dependency).
  static PluginLibrary open(const std::string& path, const std::string& kind, kvc_status status);

  const std::string& path() const { return path_; }
  bool has(const char* symbol) const;

  // The exported function `symbol`; fails with the status given to open() when it is missing:
  // "'<path>' is not a <kind>: it does not export the symbol '<symbol>'".
  template <class Signature>
  Signature* function(const char* symbol) const {
    return reinterpret_cast<Signature*>(address(symbol));
  }

  // Fails unless `got == want`: "<kind> '<path>': built for <interface> <got>, this library
  // speaks <want> (rebuild it against this kvc)".
  void require_version(const std::string& interface, uint32_t got, uint32_t want) const;

 private:
  void* address(const char* symbol) const;

  std::shared_ptr<void> library_;  // the boost::dll::shared_library, type-erased
  std::string path_, kind_;
  kvc_status status_ = KVC_ERR_INTERNAL;
};

// Folder of the binary that holds this code: libkvc.so, or an executable linking kvc_core
// statically (tests). Plugins and the CUDA backend are looked up beside it. Empty if unknown.
std::string folder_of_libkvc();

}  // namespace kvc
