// What both programs' main functions share: --list_policies, --help and --version, then the
// program's own work, with every error mapped to a message and an exit status (a usage error
// 2, a failure while running 1).
#pragma once

#include <functional>
#include <string>

#include "options.h"
#include "schema.h"

namespace kvc::hosts {

// `synopsis` follows "usage: <program> " in --help. `run` receives the parsed settings.
int program_main(Program program, const std::string& synopsis, int argc, char** argv,
                 const std::function<int(Options&)>& run);

}  // namespace kvc::hosts
