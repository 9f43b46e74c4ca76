// kvc-eval --task passkey|needle|copy (docs/hosts.md, "Retrieval tasks"): the tasks of
// hosts/eval/tasks.h run for each method of the plan, with a result file per method, a table and
// a figure (heat maps of accuracy over length x depth, one panel per method; for copy, accuracy
// against the gap).
#pragma once

#include <filesystem>
#include <string>

#include "options.h"
#include "plan.h"
#include "record.h"
#include "runtime.h"

namespace kvc::hosts {

// The methods are the plan's streamed runs: the full cache (--mode baseline, or the dense
// baseline of --mode all) and every policy; the chunked and sliding baselines score text, not
// tasks, and are skipped. Writes task_{task}_{label}.json per method, task_{task}_table.md and
// task_{task}.svg/.png into `output_dir`. Returns whether a signal interrupted the work.
bool run_tasks(const std::string& program, const Options& options, const Plan& plan,
               const LoadedModel& model, const kvc_tokenizer* tokenizer, const Inputs& in,
               const std::filesystem::path& output_dir);

}  // namespace kvc::hosts
