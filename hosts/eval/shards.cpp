#include "shards.h"

#include <algorithm>
#include <charconv>
#include <map>
#include <numeric>
#include <optional>
#include <set>

#include "files.h"
#include "report.h"
#include "summary.h"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace kvc::hosts {

namespace {

constexpr int kManifestFormat = 1;

const char* protocol_text(Protocol p) { return protocol_name(p); }

Protocol protocol_of(const std::string& name) {
  for (Protocol p : {Protocol::Stream, Protocol::Chunked, Protocol::Dense, Protocol::Sliding})
    if (name == protocol_name(p)) return p;
  throw RunError("unknown protocol '" + name + "' in a shard manifest");
}

std::string label_of(const PlannedRun& r) { return r.run.label; }

json read_json_file(const fs::path& path) {
  try {
    return json::parse(read_file(path));
  } catch (const json::exception& e) {
    throw RunError("'" + path.string() + "' is not a valid shard file: " + e.what());
  }
}

// The first key (a JSON pointer) where `a` and `b` differ, or "".
std::string first_difference(const json& a, const json& b, const std::string& at = "") {
  if (a.type() != b.type()) return at.empty() ? "/" : at;
  if (a.is_object()) {
    for (const auto& [key, value] : a.items()) {
      if (!b.contains(key)) return at + "/" + key;
      std::string d = first_difference(value, b.at(key), at + "/" + key);
      if (!d.empty()) return d;
    }
    for (const auto& [key, value] : b.items())
      if (!a.contains(key)) return at + "/" + key;
    return "";
  }
  if (a.is_array()) {
    if (a.size() != b.size()) return at.empty() ? "/" : at;
    for (size_t i = 0; i < a.size(); ++i) {
      std::string d = first_difference(a[i], b[i], at + "/" + std::to_string(i));
      if (!d.empty()) return d;
    }
    return "";
  }
  return a == b ? "" : (at.empty() ? "/" : at);
}

}  // namespace

std::string ShardSpec::suffix() const {
  return ".shard-" + std::to_string(index) + "-of-" + std::to_string(count);
}

ShardSpec parse_shard(const std::string& text, const std::string& origin) {
  ShardSpec s;
  const size_t slash = text.find('/');
  auto number = [](const std::string& t, int64_t* v) {
    auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), *v);
    return !t.empty() && ec == std::errc() && p == t.data() + t.size();
  };
  if (slash == std::string::npos || !number(text.substr(0, slash), &s.index) ||
      !number(text.substr(slash + 1), &s.count) || s.count < 1 || s.index < 0 ||
      s.index >= s.count)
    throw UsageError(origin + ": '" + text + "' is not I/N with 0 <= I < N (e.g. 0/4 for the "
                                            "first of four shards)");
  return s;
}

std::vector<WorkItem> work_items(const Plan& plan,
                                 const std::vector<std::vector<int64_t>>& counts) {
  std::vector<WorkItem> items;
  for (size_t r = 0; r < plan.runs.size(); ++r) {
    const Protocol p = plan.runs[r].run.protocol;
    const bool one_cache =
        plan.protocols.continuous && (p == Protocol::Stream || p == Protocol::Dense);
    if (one_cache) {
      const int64_t total = std::accumulate(counts[r].begin(), counts[r].end(), int64_t{0});
      if (total > 0) items.push_back({r, -1, total, 0});
      continue;
    }
    for (size_t f = 0; f < counts[r].size(); ++f)
      if (counts[r][f] > 0) items.push_back({r, static_cast<int64_t>(f), counts[r][f], 0});
  }
  return items;
}

void assign_shards(std::vector<WorkItem>& items, int64_t n_shards) {
  std::vector<size_t> order(items.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return items[a].tokens > items[b].tokens; });
  std::vector<int64_t> load(static_cast<size_t>(n_shards), 0);
  for (size_t i : order) {
    const auto lightest = std::min_element(load.begin(), load.end()) - load.begin();
    items[i].shard = lightest;
    load[static_cast<size_t>(lightest)] += items[i].tokens;
  }
}

json items_json(const std::vector<WorkItem>& items, const Plan& plan, const Inputs& in) {
  json out = json::array();
  for (const WorkItem& item : items)
    out.push_back({{"run", label_of(plan.runs[item.run])},
                   {"file", item.file < 0 ? json(nullptr)
                                          : json(in.texts.texts[static_cast<size_t>(item.file)]
                                                     .path.filename()
                                                     .string())},
                   {"tokens", item.tokens},
                   {"shard", item.shard}});
  return out;
}

json fingerprint(const Options& options, const Inputs& in) {
  json settings = settings_json(options);
  // Where things are, and what only shapes the outputs, may differ between shards.
  for (const char* key : {"path", "threads", "tokenizer"}) settings["model"].erase(key);
  settings["policy"].erase("search_path");
  for (const char* key : {"data_dir", "output_dir", "shard", "merge", "list_items", "worker",
                          "figures", "loss_window", "save_nll", "trace_cache", "trace_heads"})
    settings["eval"].erase(key);
  settings.erase("bench");
  settings.erase("generate");
  json model = json::object();
  for (const char* key : {"config_sha256", "weights_sha256", "synthetic", "weight_seed"})
    if (in.model.contains(key)) model[key] = in.model[key];
  json data = json::array();
  for (const auto& f : in.data.at("files"))
    data.push_back({{"name", f.at("name")}, {"sha256", f.at("sha256")}});
  return {{"kvc_version", in.engine.at("kvc_version")},
          {"backend", in.engine.at("backend")},
          {"dtype", in.engine.at("dtype")},
          {"model", model},
          {"data", data},
          {"settings", settings}};
}

void write_manifest(const fs::path& output_dir, const ShardSpec& shard, const Options& options,
                    const Plan& plan, const Inputs& in, const std::vector<WorkItem>& items,
                    const std::string& caption, int64_t max_position_embeddings) {
  json runs = json::array();
  for (const PlannedRun& r : plan.runs)
    runs.push_back({{"label", r.run.label},
                    {"display", r.run.display},
                    {"protocol", protocol_text(r.run.protocol)},
                    {"budget", r.budget ? json(*r.budget) : json(nullptr)},
                    {"capacity", r.capacity}});
  std::vector<int64_t> budgets = plan.budgets;
  const json manifest = {
      {"kvc_eval_shard", kManifestFormat},
      {"shard", {{"index", shard.index}, {"count", shard.count}}},
      {"fingerprint", fingerprint(options, in)},
      {"runs", runs},
      {"items", items_json(items, plan, in)},
      {"all", plan.all},
      {"compare", plan.compare},
      {"largest_budget", budgets.empty() ? json(nullptr)
                                         : json(*std::max_element(budgets.begin(),
                                                                  budgets.end()))},
      {"caption", caption},
      {"max_position_embeddings", max_position_embeddings},
      {"data_order", [&] {
         json names = json::array();
         for (const auto& f : in.data.at("files")) names.push_back(f.at("name"));
         return names;
       }()}};
  write_json(output_dir / ("shard-" + std::to_string(shard.index) + "-of-" +
                           std::to_string(shard.count) + ".json"),
             manifest);
}

// ---- merge ----------------------------------------------------------------------------------

namespace {

struct Manifest {
  fs::path path;
  json j;
};

std::vector<Manifest> find_manifests(const std::vector<std::string>& dirs) {
  std::vector<Manifest> out;
  for (const auto& dir : dirs) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
      throw RunError("--merge: '" + dir + "' is not a folder");
    std::vector<fs::path> found;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("shard-", 0) == 0 && entry.path().extension() == ".json")
        found.push_back(entry.path());
    }
    std::sort(found.begin(), found.end());
    for (const auto& path : found) {
      json j = read_json_file(path);
      if (!j.is_object() || j.value("kvc_eval_shard", 0) != kManifestFormat)
        throw RunError("'" + path.string() + "' is not a kvc-eval shard manifest (format " +
                       std::to_string(kManifestFormat) + ")");
      out.push_back({path, std::move(j)});
    }
  }
  if (out.empty()) {
    std::string listed;
    for (const auto& d : dirs) listed += (listed.empty() ? "'" : ", '") + d + "'";
    throw RunError("--merge: no shard manifest (shard-I-of-N.json) in " + listed +
                   "; a shard writes it when it finishes");
  }
  return out;
}

// Checks that the manifests are the N shards of one piece of work, each exactly once.
void check_manifests(const std::vector<Manifest>& manifests) {
  const Manifest& first = manifests.front();
  const int64_t n = first.j.at("shard").at("count").get<int64_t>();
  std::map<int64_t, const Manifest*> by_index;
  for (const Manifest& m : manifests) {
    const int64_t count = m.j.at("shard").at("count").get<int64_t>();
    const int64_t index = m.j.at("shard").at("index").get<int64_t>();
    if (count != n)
      throw RunError("--merge: '" + m.path.string() + "' is a shard of " + std::to_string(count) +
                     ", '" + first.path.string() + "' one of " + std::to_string(n) +
                     ": they are not parts of the same split");
    if (auto it = by_index.find(index); it != by_index.end())
      throw RunError("--merge: shard " + std::to_string(index) + "/" + std::to_string(n) +
                     " is given twice: '" + it->second->path.string() + "' and '" +
                     m.path.string() + "'");
    by_index[index] = &m;
    for (const char* key : {"fingerprint", "items", "runs"}) {
      const std::string d = first_difference(first.j.at(key), m.j.at(key));
      if (!d.empty())
        throw RunError("--merge: '" + m.path.string() + "' and '" + first.path.string() +
                       "' are not shards of the same evaluation: they differ in " + key + d);
    }
  }
  std::string missing;
  for (int64_t i = 0; i < n; ++i)
    if (!by_index.count(i))
      missing += (missing.empty() ? "" : ", ") + std::to_string(i) + "/" + std::to_string(n);
  if (!missing.empty())
    throw RunError("--merge: shard" + std::string(missing.find(',') == std::string::npos ? " "
                                                                                          : "s ") +
                   missing + " missing (no shard-I-of-" + std::to_string(n) +
                   ".json: not run, or not finished)");
}

}  // namespace

int merge_shards(const std::string& program, const std::vector<std::string>& dirs,
                 const Options& options) {
  std::vector<Manifest> manifests = find_manifests(dirs);
  check_manifests(manifests);
  std::sort(manifests.begin(), manifests.end(), [](const Manifest& a, const Manifest& b) {
    return a.j["shard"]["index"].get<int64_t>() < b.j["shard"]["index"].get<int64_t>();
  });
  const json& m0 = manifests.front().j;
  const int64_t n = m0.at("shard").at("count").get<int64_t>();
  const OutputDir output(options.get_string("eval", "output_dir"),
                         options.origin("eval", "output_dir"));
  std::map<std::string, size_t> file_order;
  for (const auto& name : m0.at("data_order")) file_order[name.get<std::string>()] = file_order.size();

  std::vector<RunOutcome> outcomes;
  const auto largest = m0.at("largest_budget");
  for (const auto& run : m0.at("runs")) {
    const std::string label = run.at("label");
    // The shards that hold items of this run, and the files they scored.
    std::set<int64_t> shards;
    std::multiset<std::string> expected;
    for (const auto& item : m0.at("items")) {
      if (item.at("run") != label) continue;
      shards.insert(item.at("shard").get<int64_t>());
      expected.insert(item.at("file").is_null() ? "" : item.at("file").get<std::string>());
    }
    if (shards.empty()) continue;  // nothing to score (e.g. a cap already reached)
    std::vector<json> parts;
    std::vector<std::string> sources;
    for (int64_t s : shards) {
      const fs::path dir = manifests[static_cast<size_t>(s)].path.parent_path();
      const fs::path path = dir / ("ppl_results_" + label + ShardSpec{s, n}.suffix() + ".json");
      std::error_code ec;
      if (!fs::exists(path, ec))
        throw RunError("--merge: '" + path.string() + "' is missing (shard " +
                       std::to_string(s) + "/" + std::to_string(n) + " lists items of " + label +
                       ")");
      parts.push_back(read_json_file(path));
      sources.push_back(path.string());
    }
    // Every file of the run once, in the single run's order.
    std::vector<json> files;
    std::multiset<std::string> seen;
    RunOutcome out;
    for (const json& part : parts) {
      if (part.at("interrupted").get<bool>())
        throw RunError("--merge: a shard result of " + label + " was interrupted");
      for (const auto& f : part.at("files")) files.push_back(f);
      out.wall_s += part.at("wall_time_s").get<double>();
      out.loss.merge(part.at("loss_by_position"));
    }
    const bool whole_run = expected.size() == 1 && expected.count("");
    for (const auto& f : files) seen.insert(whole_run ? "" : f.at("file").get<std::string>());
    if (!whole_run && seen != expected)
      throw RunError("--merge: the shard results of " + label + " (" + sources.front() +
                     ", ...) do not hold exactly the files their manifests list");
    std::stable_sort(files.begin(), files.end(), [&](const json& a, const json& b) {
      return file_order[a.at("file").get<std::string>()] <
             file_order[b.at("file").get<std::string>()];
    });
    for (const auto& f : files) out.total.merge(tally_from_json(f.at("tally")));

    json merged = parts.front();
    merged.erase("shard");
    merged.erase("loss_by_position");
    merged["ppl"] = out.total.ppl();
    merged["num_tokens"] = out.total.scored;
    merged["num_samples"] = files.size();
    merged["cache_size"] = out.total.cache_json();
    merged["evicted"] = out.total.evicted;
    merged["extrapolated_tokens"] = out.total.extrapolated;
    if (out.total.compared > 0) merged["comparison"] = comparison_json(out.total);
    merged["tokens_per_sec"] =
        out.wall_s > 0 ? static_cast<double>(out.total.scored) / out.wall_s : 0.0;
    merged["wall_time_s"] = out.wall_s;
    merged["files"] = files;
    merged["settings"]["eval"]["output_dir"] = output.path().string();
    merged["settings"]["eval"]["shard"] = nullptr;
    merged["settings"]["eval"]["worker"] = false;
    // The largest block any shard used (a shard's last file may end in a shorter one).
    int64_t block = 0;
    for (const json& part : parts) block = std::max(block, part.at("scoring").at("block_size").get<int64_t>());
    merged["scoring"]["block_size"] = block;
    merged["engine"]["block_size"] = block;
    merged["merged_from"] = sources;

    out.label = label;
    out.display = run.at("display");
    out.protocol = protocol_of(run.at("protocol"));
    if (!run.at("budget").is_null()) out.budget = run.at("budget").get<int64_t>();
    out.capacity = run.at("capacity");
    out.n_files = files.size();
    out.in_loss_figure = !out.budget || (!largest.is_null() && *out.budget == largest);
    out.path = output.path() / ("ppl_results_" + label + ".json");
    write_json(out.path, merged);
    print_run_line(out);
    outcomes.push_back(std::move(out));
  }
  SummarySettings s;
  s.output_dir = output.path();
  s.all = m0.at("all");
  s.compare = m0.at("compare");
  s.figures = options.get_bool("eval", "figures");
  s.loss_window = options.get_int("eval", "loss_window");
  s.max_position_embeddings = m0.at("max_position_embeddings");
  s.caption = m0.at("caption");
  write_summary(program, outcomes, s, false);
  std::fprintf(stderr, "%s: merged %lld shards from %zu manifest(s)\n", program.c_str(),
               static_cast<long long>(n), manifests.size());
  return 0;
}

}  // namespace kvc::hosts
