#include "program.h"

#include <cstdio>
#include <vector>

#include "kvc/kvc.h"
#include "kvc/policy.h"
#include "report.h"
#include "runtime.h"

namespace kvc::hosts {

namespace {

std::string version_text(const std::string& program) {
  const uint32_t abi = kvc_abi_version();
  return program + " " + kvc_version_string() + " (libkvc " + kvc_version_string() +
         ", C ABI " + std::to_string(abi >> 16) + "." + std::to_string(abi & 0xffffu) +
         ", policy ABI " + std::to_string(KVC_POLICY_ABI_MAJOR) + "." +
         std::to_string(KVC_POLICY_ABI_MINOR) + ")\n";
}

}  // namespace

int program_main(Program program, const std::string& synopsis, int argc, char** argv,
                 const std::function<int(Options&)>& run) {
  Options options = make_options(program);
  const std::string name = options.program();
  return guarded_main(name, [&]() {
    std::vector<std::string> args;
    bool list = false, version = false;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg == "--list_policies" || arg == "--list-policies")
        list = true;
      else if (arg == "--version")
        version = true;
      else
        args.push_back(arg);
    }
    if (version) {
      std::fputs(version_text(name).c_str(), stdout);
      return 0;
    }
    if (!options.parse(args)) {
      std::fputs(options.help_text(synopsis).c_str(), stdout);
      return 0;
    }
    if (list) {
      // The other flags still count: --policy_path and --config say where to look.
      PolicyCatalog catalog(options.get_opt_string("policy", "search_path").value_or(""));
      std::fputs(describe_policies(catalog).c_str(), stdout);
      return 0;
    }
    return run(options);
  });
}

}  // namespace kvc::hosts
