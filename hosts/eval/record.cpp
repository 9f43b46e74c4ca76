#include "record.h"

#include <filesystem>

#include "provenance.h"
#include "report.h"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace kvc::hosts {


Inputs describe_inputs(const Options& options, const LoadedModel& model, Texts texts,
                       std::string data_dir) {
  Inputs in;
  in.data_dir = std::move(data_dir);
  in.texts = std::move(texts);
  json files = json::array();
  for (const auto& text : in.texts.texts) files.push_back(record_file(text.path).json());
  in.data = {{"dir", in.data_dir}, {"files", files}};
  in.model = model.describe();
  const json files_of_model = model_provenance(
      "kvc-eval", model.path, static_cast<uint64_t>(options.get_int("model", "seed")));
  for (const auto& [key, value] : files_of_model.items()) in.model[key] = value;
  in.engine = engine_versions();
  in.engine["backend"] = backend_name(model.info.backend);
  in.engine["dtype"] = dtype_name(model.info.weight_dtype);
  in.engine["threads"] = model.info.n_threads;
  in.caption = fs::path(model.path).filename().string() + ", " +
               dtype_name(model.info.weight_dtype) + ", " + backend_name(model.info.backend) +
               ", " + std::to_string(model.info.n_threads) + " threads, kvc " +
               kvc_version_string();
  return in;
}

json tally_json(const Tally& t) {
  return {{"nll_sum", t.nll_sum},       {"scored", t.scored},       {"cache_max", t.cache_max},
          {"cache_sum", t.cache_sum},   {"extrapolated", t.extrapolated},
          {"evicted", t.evicted},       {"kl_sum", t.kl_sum},       {"top1_hits", t.top1_hits},
          {"compared", t.compared}};
}

Tally tally_from_json(const json& j) {
  Tally t;
  t.nll_sum = j.at("nll_sum").get<double>();
  t.scored = j.at("scored").get<int64_t>();
  t.cache_max = j.at("cache_max").get<int64_t>();
  t.cache_sum = j.at("cache_sum").get<double>();
  t.extrapolated = j.at("extrapolated").get<int64_t>();
  t.evicted = j.at("evicted").get<int64_t>();
  t.kl_sum = j.at("kl_sum").get<double>();
  t.top1_hits = j.at("top1_hits").get<int64_t>();
  t.compared = j.at("compared").get<int64_t>();
  return t;
}

json comparison_json(const Tally& t) {
  return {{"to", "dense"},
          {"mean_kl", t.mean_kl()},
          {"top1_agreement", t.top1_agreement()},
          {"num_tokens", t.compared}};
}

json result_json(const PlannedRun& planned, const RunResult& result, const Plan& plan,
                 const Inputs& in, const Options& options) {
  const EvalRun& run = planned.run;
  json config = run.spec.params_json();
  if (run.protocol == Protocol::Chunked) config["chunk_size"] = plan.protocols.chunk_size;
  if (run.protocol == Protocol::Sliding) {
    config["window"] = plan.protocols.window;
    config["stride"] = plan.protocols.stride;
  }
  const bool compared = result.total.compared > 0;
  json per_file = json::array();
  for (const auto& [index, tally] : result.files) {
    const Text& text = in.texts.texts[index];
    json f = {{"file", text.path.filename().string()},
              {"path", text.path.string()},
              {"num_tokens", tally.scored},
              {"ppl", tally.ppl()},
              {"nll_sum", tally.nll_sum},
              {"cache_size", tally.cache_json()},
              {"evicted", tally.evicted},
              {"extrapolated_tokens", tally.extrapolated},
              {"tally", tally_json(tally)}};
    if (compared) f["comparison"] = comparison_json(tally);
    per_file.push_back(std::move(f));
  }
  json skipped = json::array();
  for (const auto& s : in.texts.skipped)
    skipped.push_back({{"file", s.path.string()}, {"reason", s.reason}});
  const double tokens_per_sec =
      result.wall_s > 0 ? static_cast<double>(result.total.scored) / result.wall_s : 0.0;
  const auto cap = options.get_opt_int("eval", "num_eval_tokens");
  const bool streamed = run.protocol == Protocol::Stream || run.protocol == Protocol::Dense;
  json engine = in.engine;
  engine["block_size"] = result.block_size;
  json out = {
      {"mode", run.label},
      {"ppl", result.total.ppl()},
      {"num_tokens", result.total.scored},
      {"num_samples", result.files.size()},
      {"interrupted", result.interrupted},
      {"config", config},
      {"policy", run.spec.policy},
      {"variant", variant_summary(result.policy_report, run.spec)},
      {"policy_report", result.policy_report},
      {"protocol", protocol_name(run.protocol)},
      {"positions", run.spec.positions_name()},
      {"continuous_cache", plan.protocols.continuous && streamed},
      {"scoring", {{"block_size", result.block_size},
                   {"path", result.path},
                   {"requested_block_size", streamed ? json(plan.protocols.block_size)
                                                     : json(nullptr)},
                   {"fallback_reason", result.path_reason}}},
  };
  if (planned.budget) {
    json sizes = json::object();
    for (const auto& s : planned.scaled_sizes) sizes[s.name] = s.value;
    out["budget"] = {{"budget", *planned.budget},
                     {"capacity", planned.capacity},
                     {"scaled_parameters", sizes}};
  }
  if (compared) out["comparison"] = comparison_json(result.total);
  out.update(json{
      {"num_eval_tokens", cap ? json(*cap) : json(nullptr)},
      {"data_dir", in.data_dir},
      {"cache_size", result.total.cache_json()},
      {"evicted", result.total.evicted},
      {"extrapolated_tokens", result.total.extrapolated},
      {"tokens_per_sec", tokens_per_sec},
      {"wall_time_s", result.wall_s},
      {"engine", engine},
      {"model", in.model},
      {"data", in.data},
      {"skipped_files", skipped},
      {"num_skipped_files", in.texts.skipped.size()},
      {"files", per_file},
      {"settings", settings_json(options)},
  });
  return out;
}

}  // namespace kvc::hosts
