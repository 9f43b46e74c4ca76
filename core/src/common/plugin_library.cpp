#include "common/plugin_library.h"

#include <dlfcn.h>

#include <boost/dll/shared_library.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/error.h"

namespace kvc {

namespace {

boost::dll::shared_library& lib(const std::shared_ptr<void>& p) {
  return *static_cast<boost::dll::shared_library*>(p.get());
}

}  // namespace

std::string folder_of_libkvc() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<const void*>(&folder_of_libkvc), &info) == 0 ||
      info.dli_fname == nullptr)
    return "";
  std::error_code ec;
  const std::filesystem::path p = std::filesystem::canonical(info.dli_fname, ec);
  return (ec ? std::filesystem::path(info.dli_fname) : p).parent_path().string();
}

PluginLibrary PluginLibrary::open(const std::string& path, const std::string& kind,
                                  kvc_status status) {
  namespace fs = std::filesystem;
  std::error_code ec;
  require(fs::exists(path, ec), status, kind + " '" + path + "' does not exist");
  require(!fs::is_directory(path, ec), status,
          "'" + path + "' is a folder, not a " + kind + " (a shared object)");
  {
    // A clear message for text files and other non-ELF files, before the loader is asked.
    std::ifstream in(path, std::ios::binary);
    require(in.good(), KVC_ERR_IO, "cannot open the " + kind + " '" + path + "'");
    char magic[4] = {};
    in.read(magic, 4);
    require(in.gcount() == 4 && std::memcmp(magic, "\x7f" "ELF", 4) == 0, status,
            "'" + path + "' is not a " + kind + ": it is not a shared object (no ELF header)");
  }
  auto handle = std::make_shared<boost::dll::shared_library>();
  handle->load(path, ec, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
  if (ec || !handle->is_loaded()) {
    // Boost.DLL drops dlerror()'s text (which names a missing dependency); ask the loader.
    std::string why = ec ? ec.message() : "unknown error";
    dlerror();
    if (void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      dlclose(h);
    } else if (const char* e = dlerror()) {
      why = e;
    }
    fail(status, "'" + path + "' is not a loadable shared object: " + why);
  }
  PluginLibrary out;
  out.library_ = std::shared_ptr<void>(handle, handle.get());
  out.path_ = path;
  out.kind_ = kind;
  out.status_ = status;
  return out;
}

bool PluginLibrary::has(const char* symbol) const { return lib(library_).has(symbol); }

void* PluginLibrary::address(const char* symbol) const {
  require(has(symbol), status_,
          "'" + path_ + "' is not a " + kind_ + ": it does not export the symbol '" + symbol +
              "'");
  return reinterpret_cast<void*>(&lib(library_).get<char>(symbol));
}

void PluginLibrary::require_version(const std::string& interface, uint32_t got,
                                    uint32_t want) const {
  require(got == want, status_,
          kind_ + " '" + path_ + "': built for " + interface + " " + std::to_string(got) +
              ", this library speaks " + std::to_string(want) + " (rebuild it against this kvc)");
}

}  // namespace kvc
