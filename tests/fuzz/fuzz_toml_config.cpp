// The TOML config of kvc-eval / kvc-bench and their command lines: the hosts' own settings
// registry (hosts/common/options.h), fed a config text or an argv. UsageError (exit status 2
// in the programs) is the expected rejection; anything else escaping is a finding.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "options.h"
#include "schema.h"

namespace {

// Reads every setting back through its typed getter, as the programs do after parsing.
void read_back(const kvc::hosts::Options& o) {
  using kvc::hosts::Kind;
  for (const auto& opt : o.options()) {
    const bool none = std::holds_alternative<std::monostate>(opt.value);
    // None is only allowed where declared; a default may be None (e.g. "the policy's").
    if (none && !opt.nullable && opt.kind != Kind::ParamList &&
        opt.source != kvc::hosts::Source::Default) {
      std::fprintf(stderr, "[%s] %s was set to None\n", opt.section.c_str(), opt.key.c_str());
      std::abort();
    }
    switch (opt.kind) {
      case Kind::Int:
        if (none) (void)o.get_opt_int(opt.section, opt.key);
        else (void)o.get_int(opt.section, opt.key);
        break;
      case Kind::Float: if (!none) (void)o.get_float(opt.section, opt.key); break;
      case Kind::Bool: if (!none) (void)o.get_bool(opt.section, opt.key); break;
      case Kind::IntList: if (!none) (void)o.get_int_list(opt.section, opt.key); break;
      case Kind::String:
      case Kind::Choice:
        if (none) (void)o.get_opt_string(opt.section, opt.key);
        else (void)o.get_string(opt.section, opt.key);
        break;
      case Kind::ParamList: break;  // kept in extra_policy_params()
    }
    (void)kvc::hosts::to_text(opt.value);
  }
  (void)o.extra_policy_params();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // First byte: bit 0 picks the program, bit 1 a command line instead of a config text.
  const uint8_t mode = data[0];
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  auto options = kvc::hosts::make_options((mode & 1) ? kvc::hosts::Program::Bench
                                                     : kvc::hosts::Program::Eval);
  try {
    if (mode & 2) {
      // NUL-separated arguments. --config would read a file named by the input: left out.
      std::vector<std::string> args;
      size_t from = 0;
      while (from <= text.size()) {
        size_t end = text.find('\0', from);
        if (end == std::string::npos) end = text.size();
        std::string arg = text.substr(from, end - from);
        if (arg.rfind("--config", 0) != 0) args.push_back(std::move(arg));
        from = end + 1;
      }
      if (!options.parse(args)) return 0;  // --help
    } else {
      options.load_toml_string(text, "fuzz.toml");
    }
    read_back(options);
  } catch (const kvc::hosts::UsageError& e) {
    if (std::string(e.what()).empty()) std::abort();  // every rejection names what is wrong
  }
  return 0;
}
