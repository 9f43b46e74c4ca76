// What a kvc-eval result file records (docs/hosts.md, "Output"): the inputs (model and data
// files with their hashes, the engine), and each run's numbers with the policy as it ran.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "options.h"
#include "plan.h"
#include "runtime.h"
#include "scoring.h"
#include "texts.h"

namespace kvc::hosts {

struct Inputs {
  std::string data_dir;
  Texts texts;
  nlohmann::ordered_json data;    // each text file: name, path, bytes, sha256
  nlohmann::ordered_json model;   // info, and its files with hashes
  nlohmann::ordered_json engine;  // versions, backend, dtype, threads
  std::string caption;            // model, dtype, backend, threads (for the figures)
};

Inputs describe_inputs(const Options& options, const LoadedModel& model, Texts texts,
                       std::string data_dir);

// The raw sums of a tally, for exact merges (docs/scale-out.md), and back.
nlohmann::ordered_json tally_json(const Tally& t);
Tally tally_from_json(const nlohmann::ordered_json& j);
nlohmann::ordered_json comparison_json(const Tally& t);

// ppl_results_{label}.json of one run.
nlohmann::ordered_json result_json(const PlannedRun& planned, const RunResult& result,
                                   const Plan& plan, const Inputs& in, const Options& options);

}  // namespace kvc::hosts
