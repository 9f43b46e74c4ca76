// What kvc-eval and kvc-bench record, and that nothing is lost: provenance of every number
// (policy report, engine, model and data hashes), per-token dumps, the comparison with the full
// cache, cache traces, budget sweeps, figures, interrupted runs, and the messages for flags
// given twice or to modes they do not apply to (docs/hosts.md).
#include <signal.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "../tokenizer/sha256.h"
#include "kvc/kvc.h"
#include "program_test_support.h"

namespace {

using namespace kvc_test;
using kvc::test::sha256_hex;

// Rows of a tab-separated file with a header line, as maps from column name to text.
std::vector<std::map<std::string, std::string>> read_tsv(const fs::path& path,
                                                         std::vector<std::string>* header) {
  std::istringstream in(slurp(path));
  std::string line;
  auto split = [](const std::string& l) {
    std::vector<std::string> cells;
    std::stringstream s(l);
    std::string cell;
    while (std::getline(s, cell, '\t')) cells.push_back(cell);
    return cells;
  };
  std::getline(in, line);
  *header = split(line);
  std::vector<std::map<std::string, std::string>> rows;
  while (std::getline(in, line)) {
    const auto cells = split(line);
    std::map<std::string, std::string> row;
    for (size_t i = 0; i < cells.size() && i < header->size(); ++i) row[(*header)[i]] = cells[i];
    rows.push_back(std::move(row));
  }
  return rows;
}

std::vector<json> read_jsonl(const fs::path& path) {
  std::istringstream in(slurp(path));
  std::vector<json> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(json::parse(line));
  return lines;
}

bool has_gnuplot() { return ::access("/usr/bin/gnuplot", X_OK) == 0; }

void expect_figure(const fs::path& stem) {
  if (!has_gnuplot()) GTEST_SKIP() << "gnuplot is not installed: figures are not drawn";
  fs::path svg = stem, png = stem;
  svg += ".svg";
  png += ".png";
  const std::string svg_text = slurp(svg);
  EXPECT_NE(svg_text.find("<svg"), std::string::npos) << svg;
  const std::string png_bytes = slurp(png);
  ASSERT_GT(png_bytes.size(), 8u) << png;
  EXPECT_EQ(png_bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
}

int count_temporaries(const fs::path& dir) {
  int n = 0;
  if (!fs::exists(dir)) return 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    n += e.path().filename().string().find(".tmp.") != std::string::npos;
  return n;
}

// ---- every number says how it was made ------------------------------------------------------

TEST_F(Programs, ResultRecordsHowItWasMade) {
  auto r = eval(concat(text_model_flags(),
                       {"--mode", "streaming", "--start_size", "2", "--recent_size", "6",
                        "--data_dir", "data", "--output_dir", "out", "--num_eval_tokens", "40"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  // The variant is announced when the run starts.
  EXPECT_NE(r.err.find("kvc-eval: streaming: streaming"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("sinks 2 + recent 6"), std::string::npos) << r.err;
  const json j = read_json("out/ppl_results_streaming.json");
  EXPECT_EQ(j.at("interrupted"), false);
  EXPECT_NE(j.at("variant").get<std::string>().find("sinks 2 + recent 6"), std::string::npos);
  const json& report = j.at("policy_report");
  EXPECT_EQ(report.at("policy"), "streaming");
  EXPECT_EQ(report.at("parameters").at("recent_size"), 6);
  EXPECT_EQ(report.at("rule").at("sink_size"), 2);
  EXPECT_EQ(report.at("capacity"), 8);

  const json& engine = j.at("engine");
  EXPECT_EQ(engine.at("kvc_version"), kvc_version_string());
  EXPECT_EQ(engine.at("backend"), "cpu");
  EXPECT_EQ(engine.at("dtype"), "f32");
  EXPECT_EQ(engine.at("threads"), 1);
  EXPECT_EQ(engine.at("block_size"), KVC_DEFAULT_BLOCK_SIZE);
  EXPECT_TRUE(engine.at("policy_abi").is_string());

  // Hashes checked against an independent SHA-256.
  const json& model = j.at("model");
  if (has_kjv_mini()) {
    const fs::path folder = fs::path(KVC_SOURCE_DIR) / "models/kjv-mini";
    EXPECT_EQ(model.at("config_sha256"), sha256_hex(slurp(folder / "config.json")));
    bool weights = false;
    for (const auto& f : model.at("files")) {
      EXPECT_EQ(f.at("sha256"), sha256_hex(slurp(folder / f.at("name").get<std::string>())));
      EXPECT_EQ(f.at("bytes"), fs::file_size(folder / f.at("name").get<std::string>()));
      weights |= f.at("name") == "model.safetensors";
    }
    EXPECT_TRUE(weights);
    EXPECT_EQ(model.at("weights_sha256").get<std::string>().size(), 64u);
  } else {
    EXPECT_EQ(model.at("synthetic"), "pythia-70m");
  }
  const json& data = j.at("data");
  ASSERT_EQ(data.at("files").size(), 2u);
  EXPECT_EQ(data.at("files")[0].at("name"), "a.txt");
  EXPECT_EQ(data.at("files")[0].at("bytes"), std::string(kText1).size());
  EXPECT_EQ(data.at("files")[0].at("sha256"), sha256_hex(kText1));
  EXPECT_EQ(data.at("files")[1].at("sha256"), sha256_hex(kText2));
}

// The seed's H2O scored layer 0 for all layers; kvc's h2o is per head unless told otherwise,
// and the record says which ran.
TEST_F(Programs, H2oVariantIsRecorded) {
  const auto base = concat(text_model_flags(), {"--mode", "h2o", "--data_dir", "data",
                                                "--num_eval_tokens", "10"});
  auto per_head = eval(concat(base, {"--output_dir", "a"}));
  ASSERT_EQ(per_head.rc, 0) << per_head.err;
  auto shared = eval(concat(base, {"--output_dir", "b", "--scope", "shared", "--param",
                                   "score_layers=0"}));
  ASSERT_EQ(shared.rc, 0) << shared.err;
  const json a = read_json("a/ppl_results_h2o.json"), b = read_json("b/ppl_results_h2o.json");
  EXPECT_EQ(a.at("policy_report").at("rule").at("scope"), "per_head");
  EXPECT_EQ(b.at("policy_report").at("rule").at("scope"), "shared");
  EXPECT_EQ(b.at("policy_report").at("rule").at("score_layers"), json::array({0}));
  EXPECT_NE(a.at("variant").get<std::string>().find("(per_head"), std::string::npos);
  EXPECT_NE(b.at("variant").get<std::string>().find("(shared of layers [0]"), std::string::npos);
  EXPECT_NE(shared.err.find("shared of layers [0]"), std::string::npos) << shared.err;
}

// ---- per-token dumps and the comparison with the full cache --------------------------------

TEST_F(Programs, SaveNllAndCompareToDense) {
  auto r = eval(concat(text_model_flags(),
                       {"--mode", "h2o", "--start_size", "2", "--recent_size", "4",
                        "--heavy_size", "4", "--data_dir", "data", "--output_dir", "out",
                        "--save_nll", "--compare_to", "dense", "--num_eval_tokens", "60"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  const json j = read_json("out/ppl_results_h2o.json");
  std::vector<std::string> header;
  const auto rows = read_tsv(dir_ / "out/nll_h2o.tsv", &header);
  EXPECT_EQ(header, (std::vector<std::string>{"file", "position", "token", "nll", "cache",
                                              "evicted", "kl", "top1"}));
  ASSERT_EQ(static_cast<int64_t>(rows.size()), j.at("num_tokens").get<int64_t>());
  double nll = 0, kl = 0, top1 = 0;
  int64_t evicted = 0, cache_max = 0;
  for (const auto& row : rows) {
    nll += std::stod(row.at("nll"));
    kl += std::stod(row.at("kl"));
    top1 += std::stod(row.at("top1"));
    evicted += std::stoll(row.at("evicted"));
    cache_max = std::max<int64_t>(cache_max, std::stoll(row.at("cache")));
    // Before the first eviction both caches hold the same entries: identical distributions.
    if (std::stoll(row.at("position")) <= 10 && row.at("file") == "a.txt") {
      EXPECT_LT(std::stod(row.at("kl")), 1e-6) << row.at("position");
      EXPECT_EQ(row.at("top1"), "1");
    }
  }
  double nll_sum = 0;
  for (const auto& f : j.at("files")) nll_sum += f.at("nll_sum").get<double>();
  EXPECT_NEAR(nll, nll_sum, 1e-6 * nll_sum);
  EXPECT_EQ(evicted, j.at("evicted").get<int64_t>());
  EXPECT_GT(evicted, 0);
  EXPECT_EQ(cache_max, 10);
  const double n = static_cast<double>(rows.size());
  const json& c = j.at("comparison");
  EXPECT_EQ(c.at("to"), "dense");
  EXPECT_NEAR(c.at("mean_kl").get<double>(), kl / n, 1e-6);
  EXPECT_NEAR(c.at("top1_agreement").get<double>(), top1 / n, 1e-12);
  EXPECT_GT(c.at("mean_kl").get<double>(), 1e-4);  // a cache of 10 loses information

  // A policy whose cache never fills agrees with the full cache everywhere.
  auto full = eval(concat(text_model_flags(),
                          {"--mode", "streaming", "--recent_size", "1000", "--data_dir", "data",
                           "--output_dir", "big", "--compare_to", "dense"}));
  ASSERT_EQ(full.rc, 0) << full.err;
  const json big = read_json("big/ppl_results_streaming.json");
  EXPECT_LT(big.at("comparison").at("mean_kl").get<double>(), 1e-6);
  EXPECT_EQ(big.at("comparison").at("top1_agreement"), 1.0);
}

TEST_F(Programs, TraceCacheRecordsKeptEntries) {
  auto r = eval(concat(text_model_flags(),
                       {"--mode", "h2o", "--start_size", "2", "--recent_size", "4",
                        "--heavy_size", "3", "--data_dir", "data", "--num_samples", "1",
                        "--output_dir", "out", "--trace_cache", "10", "--num_eval_tokens",
                        "40"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  const json j = read_json("out/ppl_results_h2o.json");
  const int n_layers = j.at("model").at("n_layers"), n_heads = j.at("model").at("n_heads");
  const auto lines = read_jsonl(dir_ / "out/cache_trace_h2o.jsonl");
  ASSERT_EQ(lines.size(), 4u);  // after 10, 20, 30 and 40 tokens
  for (size_t i = 0; i < lines.size(); ++i) {
    const json& line = lines[i];
    EXPECT_EQ(line.at("file"), "a.txt");
    const int64_t step = line.at("step");
    EXPECT_EQ(step, static_cast<int64_t>(10 * (i + 1)));
    ASSERT_EQ(line.at("heads").size(), static_cast<size_t>(n_layers));
    for (const auto& layer : line.at("heads")) {
      ASSERT_EQ(layer.size(), static_cast<size_t>(n_heads));
      for (const auto& head : layer) {
        const auto positions = head.at("positions").get<std::vector<int64_t>>();
        ASSERT_EQ(positions.size(), static_cast<size_t>(std::min<int64_t>(step, 9)));
        ASSERT_EQ(head.at("scores").size(), positions.size());
        EXPECT_TRUE(std::is_sorted(positions.begin(), positions.end()));
        if (step > 9) {  // sinks 0 and 1, and the 4 most recent, are always kept
          EXPECT_EQ(positions[0], 0);
          EXPECT_EQ(positions[1], 1);
          EXPECT_EQ(positions.back(), step - 1);
          EXPECT_EQ(positions[positions.size() - 4], step - 4);
        }
      }
    }
  }
  expect_figure(dir_ / "out/cache_trace_h2o");

  // A policy that ranks by no signal has no scores.
  auto s = eval(concat(text_model_flags(),
                       {"--mode", "streaming", "--recent_size", "4", "--data_dir", "data",
                        "--num_samples", "1", "--output_dir", "s", "--trace_cache", "16",
                        "--figures=false", "--num_eval_tokens", "20"}));
  ASSERT_EQ(s.rc, 0) << s.err;
  const auto trace = read_jsonl(dir_ / "s/cache_trace_streaming.jsonl");
  ASSERT_EQ(trace.size(), 1u);
  EXPECT_TRUE(trace[0].at("heads")[0][0].at("scores").is_null());
  EXPECT_FALSE(fs::exists(dir_ / "s/cache_trace_streaming.svg"));
}

// ---- budget sweeps and figures --------------------------------------------------------------

TEST_F(Programs, BudgetSweepScalesSizesToEachBudget) {
  auto r = eval(concat(text_model_flags(),
                       {"--mode", "h2o", "--start_size", "2", "--recent_size", "20",
                        "--heavy_size", "10", "--budgets", "8", "14", "--data_dir", "data",
                        "--output_dir", "out", "--num_eval_tokens", "50"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  for (int budget : {8, 14}) {
    const json j = read_json("out/ppl_results_h2o_budget" + std::to_string(budget) + ".json");
    EXPECT_EQ(j.at("budget").at("budget"), budget);
    EXPECT_EQ(j.at("budget").at("capacity"), budget);
    EXPECT_EQ(j.at("cache_size").at("max"), budget);
    EXPECT_EQ(j.at("config").at("start_size"), 2);  // sinks do not scale
    const int64_t recent = j.at("config").at("recent_size"), heavy = j.at("config").at("heavy_size");
    EXPECT_EQ(2 + recent + heavy, budget);
    EXPECT_NEAR(static_cast<double>(recent) / static_cast<double>(heavy), 2.0, 0.5);
    EXPECT_EQ(j.at("budget").at("scaled_parameters").at("recent_size"), recent);
  }
  const std::string table = slurp(dir_ / "out/ppl_budget_sweep.md");
  EXPECT_NE(table.find("| Budget"), std::string::npos) << table;
  EXPECT_NE(table.find("| h2o    | 14 "), std::string::npos) << table;
  expect_figure(dir_ / "out/ppl_budget_sweep");
}

TEST_F(Programs, BudgetSweepBadInput) {
  auto baseline = eval(concat(text_model_flags(), {"--mode", "baseline", "--budgets", "8",
                                                   "--data_dir", "data", "--output_dir", "o"}));
  EXPECT_EQ(baseline.rc, 2);
  EXPECT_NE(baseline.err.find("--budgets"), std::string::npos) << baseline.err;
  auto small = eval(concat(text_model_flags(), {"--mode", "streaming", "--start_size", "4",
                                                "--budgets", "3", "--data_dir", "data",
                                                "--output_dir", "o"}));
  EXPECT_EQ(small.rc, 2);
  EXPECT_NE(small.err.find("--budgets 3"), std::string::npos) << small.err;
  EXPECT_NE(small.err.find("cannot hold fewer than"), std::string::npos) << small.err;
  EXPECT_EQ(count_files("o"), 0);
  EXPECT_FALSE(fs::exists(dir_ / "o"));  // the folder made for the results is removed again
}

TEST_F(Programs, LossFigureIsDrawn) {
  auto r = eval(concat(text_model_flags(), {"--mode", "streaming", "--recent_size", "8",
                                            "--data_dir", "data", "--output_dir", "out"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  expect_figure(dir_ / "out/loss_vs_position");
}

// ---- nothing lost -----------------------------------------------------------------------------

TEST_F(Programs, InterruptedEvalWritesWhatItHas) {
  std::string long_text;
  for (int i = 0; i < 400; ++i) long_text += kText1;
  write("long/book.txt", long_text);
  const pid_t pid = start_eval(concat(text_model_flags(),
                                      {"--mode", "streaming", "--block_size", "1", "--data_dir",
                                       "long", "--output_dir", "out", "--save_nll"}));
  ASSERT_TRUE(wait_for_stderr("kvc-eval: streaming: ", 60));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ::kill(pid, SIGINT);
  const Result r = finish(pid);
  EXPECT_EQ(r.rc, 128 + SIGINT) << r.err;
  EXPECT_NE(r.err.find("interrupted"), std::string::npos) << r.err;
  const json j = read_json("out/ppl_results_streaming.json");
  EXPECT_EQ(j.at("interrupted"), true);
  EXPECT_GT(j.at("num_tokens").get<int64_t>(), 0);
  EXPECT_LT(j.at("num_tokens").get<int64_t>(), 20000);
  std::vector<std::string> header;
  EXPECT_EQ(static_cast<int64_t>(read_tsv(dir_ / "out/nll_streaming.tsv", &header).size()),
            j.at("num_tokens").get<int64_t>());
  EXPECT_NE(r.out.find("(interrupted)"), std::string::npos) << r.out;  // the summary line
  EXPECT_EQ(count_temporaries(dir_ / "out"), 0);
}

TEST_F(Programs, InterruptedBenchWritesWhatItHas) {
  const pid_t pid = start_bench({"--model_name_or_path", "synthetic:pythia-70m", "--mode",
                                 "streaming", "--seq_lengths", "16", "32", "64", "128", "256",
                                 "512", "1024", "--num_decode_tokens", "30", "--warmup", "0",
                                 "--repetitions", "2", "--output_dir", "speed"});
  ASSERT_TRUE(wait_for_stderr("streaming: seq_length 16:", 120));
  ::kill(pid, SIGTERM);
  const Result r = finish(pid);
  EXPECT_EQ(r.rc, 128 + SIGTERM) << r.err;
  const json j = read_json("speed/speed_results_streaming.json");
  EXPECT_EQ(j.at("interrupted"), true);
  EXPECT_GE(j.at("results").size(), 1u);
  EXPECT_LT(j.at("results").size(), 7u);
  EXPECT_EQ(count_temporaries(dir_ / "speed"), 0);
}

TEST_F(Programs, UnwritableOutputFolderFailsBeforeTheWork) {
  write("afile", "not a folder");
  auto r = eval(concat(text_model_flags(), {"--mode", "streaming", "--data_dir", "data",
                                            "--output_dir", "afile/out"}));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("--output_dir"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("afile/out"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("streaming:"), std::string::npos) << "no run started: " << r.err;
  // From a config file, the message names the key and the file.
  write("c.toml", "[bench]\noutput_dir = \"afile/speed\"\n");
  auto b = bench({"--config", "c.toml", "--model_name_or_path", "synthetic:pythia-70m",
                  "--seq_lengths", "8"});
  EXPECT_EQ(b.rc, 1);
  EXPECT_NE(b.err.find("[bench] output_dir in c.toml"), std::string::npos) << b.err;
}

// ---- flags ------------------------------------------------------------------------------------

TEST_F(Programs, FlagGivenTwiceIsAnError) {
  auto twice = eval({"--recent_size", "4", "--recent_size", "5", "--output_dir", "o"});
  EXPECT_EQ(twice.rc, 2);
  EXPECT_NE(twice.err.find("--recent_size is given twice (--recent_size 4 and --recent_size 5)"),
            std::string::npos)
      << twice.err;
  auto both = eval(concat(text_model_flags(), {"--mode", "streaming", "--recent_size", "4",
                                               "--param", "recent_size=5", "--data_dir", "data",
                                               "--output_dir", "o"}));
  EXPECT_EQ(both.rc, 2);
  EXPECT_NE(both.err.find("--recent_size 4"), std::string::npos) << both.err;
  EXPECT_NE(both.err.find("--param recent_size=5"), std::string::npos) << both.err;
  write("c.toml", "[eval]\nnum_samples = 1\n");
  auto configs = eval({"--config", "c.toml", "--config", "c.toml"});
  EXPECT_EQ(configs.rc, 2);
  EXPECT_NE(configs.err.find("--config is given twice"), std::string::npos) << configs.err;
  EXPECT_EQ(count_files("o"), 0);
}

TEST_F(Programs, FlagsThatDoNotApplyWarn) {
  const auto base = concat(text_model_flags(), {"--data_dir", "data", "--output_dir", "o",
                                                "--num_eval_tokens", "5"});
  auto chunk = eval(concat(base, {"--mode", "h2o", "--chunk_size", "100"}));
  ASSERT_EQ(chunk.rc, 0) << chunk.err;
  EXPECT_NE(chunk.err.find("--chunk_size is ignored: it applies to the chunked baseline"),
            std::string::npos)
      << chunk.err;
  auto heavy = eval(concat(base, {"--mode", "baseline", "--heavy_size", "3"}));
  ASSERT_EQ(heavy.rc, 0) << heavy.err;
  EXPECT_NE(heavy.err.find("--heavy_size is ignored: --mode baseline"), std::string::npos)
      << heavy.err;
  auto streaming = eval(concat(base, {"--mode", "streaming", "--heavy_size", "3"}));
  ASSERT_EQ(streaming.rc, 0) << streaming.err;
  EXPECT_NE(streaming.err.find("--heavy_size is ignored: policy 'streaming' has no parameter"),
            std::string::npos)
      << streaming.err;
  // start_size + recent_size set the sliding window: no warning there.
  auto sliding = eval(concat(base, {"--mode", "baseline", "--baseline", "sliding",
                                    "--start_size", "1", "--recent_size", "3"}));
  ASSERT_EQ(sliding.rc, 0) << sliding.err;
  EXPECT_EQ(sliding.err.find("warning"), std::string::npos) << sliding.err;
}

TEST_F(Programs, StreamingThatKeepsNothingNamesTheSizes) {
  auto r = eval(concat(text_model_flags(), {"--mode", "streaming", "--start_size", "0",
                                            "--recent_size", "0", "--data_dir", "data",
                                            "--output_dir", "o"}));
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("add up to 0"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("--window"), std::string::npos) << r.err;
}

TEST_F(Programs, HelpVersionAndListNameEveryMode) {
  auto help = eval({"--help"});
  ASSERT_EQ(help.rc, 0);
  for (const char* flag : {"lazy_unified", "--save_nll", "--trace_cache", "--compare_to",
                           "--budgets", "--figures"})
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag;
  auto list = eval({"--list_policies"});
  ASSERT_EQ(list.rc, 0);
  EXPECT_NE(list.out.find("lazy_unified (mode)"), std::string::npos) << list.out;
  auto version = bench({"--version"});
  ASSERT_EQ(version.rc, 0);
  EXPECT_NE(version.out.find(kvc_version_string()), std::string::npos) << version.out;
  EXPECT_NE(version.out.find("policy ABI"), std::string::npos) << version.out;
}

// ---- separators -------------------------------------------------------------------------------

TEST_F(Programs, SeparatorStringsFromATomlArray) {
  write("c.toml", "[policy]\nname = \"sepllm\"\nseparator_strings = [\".\", \",\"]\n");
  auto r = eval(concat(text_model_flags(), {"--config", "c.toml", "--data_dir", "data",
                                            "--output_dir", "out", "--num_eval_tokens", "10"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  const json j = read_json("out/ppl_results_sepllm.json");
  EXPECT_EQ(j.at("config").at("separator_strings"), json::array({".", ","}));
  const auto text = j.at("policy_report").at("rule").at("separator_text");
  EXPECT_NE(std::find(text.begin(), text.end(), "."), text.end()) << text;
  EXPECT_NE(std::find(text.begin(), text.end(), ","), text.end()) << text;
  EXPECT_EQ(j.at("policy_report").at("rule").at("separator_ids").size(), text.size());

  auto bad = eval(concat(text_model_flags(), {"--mode", "sepllm", "--param",
                                              "separators=99999999", "--data_dir", "data",
                                              "--output_dir", "o"}));
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.err.find("99999999"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("vocabulary"), std::string::npos) << bad.err;
  EXPECT_EQ(count_files("o"), 0);
}

// ---- kvc-bench --------------------------------------------------------------------------------

TEST_F(Programs, BenchRecordsMemoryVariantAndFigure) {
  auto r = bench({"--model_name_or_path", "synthetic:pythia-70m", "--mode", "streaming",
                  "--start_size", "4", "--recent_size", "12", "--seq_lengths", "32",
                  "--num_decode_tokens", "3", "--warmup", "0", "--repetitions", "2",
                  "--output_dir", "speed"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("kvc-bench: streaming: streaming"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("kvc-bench"), std::string::npos) << r.err;  // the progress line
  const json j = read_json("speed/speed_results_streaming.json");
  EXPECT_EQ(j.at("interrupted"), false);
  EXPECT_NE(j.at("variant").get<std::string>().find("sinks 4 + recent 12"), std::string::npos);
  EXPECT_EQ(j.at("engine").at("kvc_version"), kvc_version_string());
  EXPECT_EQ(j.at("model").at("synthetic"), "pythia-70m");
  const json& res = j.at("results").at(0);
  // pythia-70m: 6 layers x 8 heads, head_dim 64, f32 keys and values on the CPU.
  EXPECT_EQ(res.at("kv_cache_bytes"), 6 * 8 * 16 * 2 * 64 * 4);
  EXPECT_GT(res.at("peak_rss_bytes").get<int64_t>(), 0);
  EXPECT_TRUE(res.at("repetition_cv").is_number());
  expect_figure(dir_ / "speed/speed_benchmark_streaming");
}

}  // namespace

// ---- retrieval tasks ----------------------------------------------------------------------

namespace {

TEST_F(Programs, TaskRunsAreRecordedAndRepeatable) {
  const auto args = concat(text_model_flags(),
                           {"--mode", "streaming", "--task", "passkey", "--task_lengths", "128",
                            "--task_depths", "0", "100", "--task_samples", "2", "--figures=false"});
  auto a = eval(concat(args, {"--output_dir", "a"}));
  ASSERT_EQ(a.rc, 0) << a.err;
  auto b = eval(concat(args, {"--output_dir", "b"}));
  ASSERT_EQ(b.rc, 0) << b.err;
  const json ja = read_json("a/task_passkey_streaming.json");
  EXPECT_EQ(ja.at("task"), "passkey");
  EXPECT_EQ(ja.at("num_instances"), 4);
  ASSERT_EQ(ja.at("cells").size(), 2u);
  EXPECT_EQ(ja.at("cells")[0].at("length"), 128);
  ASSERT_EQ(ja.at("instances").size(), 4u);
  for (const auto& inst : ja.at("instances")) {
    EXPECT_TRUE(inst.at("generated").is_string());
    EXPECT_EQ(inst.at("expected").size(), 1u);
    const double score = inst.at("score");
    EXPECT_TRUE(score == 0.0 || score == 1.0);
  }
  // The same seed gives the same instances and the same answers.
  EXPECT_EQ(ja.at("instances"), read_json("b/task_passkey_streaming.json").at("instances"));
  const std::string table = slurp(dir_ / "a/task_passkey_table.md");
  EXPECT_NE(table.find("| streaming"), std::string::npos) << table;

  auto copy = eval(concat(text_model_flags(),
                          {"--mode", "baseline", "--task", "copy", "--task_lengths", "0", "64",
                           "--task_samples", "1", "--copy_span", "8", "--output_dir", "c",
                           "--figures=false"}));
  ASSERT_EQ(copy.rc, 0) << copy.err;
  const json jc = read_json("c/task_copy_baseline_dense.json");
  ASSERT_EQ(jc.at("cells").size(), 2u);
  EXPECT_EQ(jc.at("cells")[1].at("gap"), 64);
  EXPECT_TRUE(jc.at("instances")[0].at("mean_nll").is_number());

  auto shard = eval(concat(args, {"--shard", "0/2", "--output_dir", "s"}));
  EXPECT_EQ(shard.rc, 2);
  EXPECT_NE(shard.err.find("applies to --task ppl"), std::string::npos) << shard.err;
  EXPECT_EQ(count_files("s"), 0);
}

// The embedded model retrieves a passkey inside its 512-token context with the full cache, and
// StreamingLLM with a window that has dropped the key cannot: the difference the tasks exist to
// show (docs/embedded-model.md, "Retrieval").
TEST_F(Programs, EmbeddedModelRetrievesThePasskeyOnlyWhileTheCacheHoldsIt) {
  if (!has_kjv_mini()) GTEST_SKIP() << "models/kjv-mini is not present";
  // Prompts of at most 384 tokens, the key at 20 % depth (its sentence starts at token 112): a
  // window of the last 64 tokens (plus 4 sinks) starts long after it.
  const std::vector<std::string> task = {"--task", "passkey", "--task_lengths", "384",
                                         "--task_depths", "20", "--task_samples", "4",
                                         "--figures=false"};
  auto dense = eval(concat(text_model_flags(),
                           concat({"--mode", "baseline", "--output_dir", "d"}, task)));
  ASSERT_EQ(dense.rc, 0) << dense.err;
  auto streaming = eval(concat(text_model_flags(),
                               concat({"--mode", "streaming", "--start_size", "4",
                                       "--recent_size", "64", "--output_dir", "s"},
                                      task)));
  ASSERT_EQ(streaming.rc, 0) << streaming.err;
  const json jd = read_json("d/task_passkey_baseline_dense.json");
  const json js = read_json("s/task_passkey_streaming.json");
  ASSERT_EQ(jd.at("instances").size(), 4u);
  ASSERT_EQ(js.at("instances").size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    const json& d = jd.at("instances")[i];
    const json& s = js.at("instances")[i];
    ASSERT_EQ(d.at("expected"), s.at("expected"));  // the same instance for both methods
    // The whole needle sentence (about 30 tokens) lies before the streaming window.
    EXPECT_LT(s.at("needle_positions")[0].get<int64_t>() + 30,
              s.at("prompt_tokens").get<int64_t>() - 64);
    EXPECT_EQ(d.at("score"), 1.0) << "dense, instance " << i << ": " << d.dump();
    EXPECT_EQ(s.at("score"), 0.0) << "streaming, instance " << i << ": " << s.dump();
  }
}

}  // namespace

namespace {

// [policy.<mode>] tables set parameters of one mode only, so --mode all can run every method at
// the same budget.
TEST_F(Programs, PerModeConfigTables) {
  write("c.toml",
        "[policy]\nname = \"all\"\nstart_size = 2\nrecent_size = 6\nheavy_size = 4\n"
        "[policy.snapkv]\nheavy_size = 5\n[policy.tova]\nbudget = 12\n");
  auto r = eval(concat(text_model_flags(), {"--config", "c.toml", "--data_dir", "data",
                                            "--output_dir", "out", "--num_eval_tokens", "20",
                                            "--figures=false"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(read_json("out/ppl_results_h2o.json").at("config").at("heavy_size"), 4);
  EXPECT_EQ(read_json("out/ppl_results_snapkv.json").at("config").at("heavy_size"), 5);
  EXPECT_EQ(read_json("out/ppl_results_tova.json").at("config").at("budget"), 12);
  // The command line still wins.
  auto flag = eval(concat(text_model_flags(),
                          {"--config", "c.toml", "--mode", "snapkv", "--heavy_size", "7",
                           "--data_dir", "data", "--output_dir", "f", "--num_eval_tokens", "20",
                           "--figures=false"}));
  ASSERT_EQ(flag.rc, 0) << flag.err;
  EXPECT_EQ(read_json("f/ppl_results_snapkv.json").at("config").at("heavy_size"), 7);
  // A parameter the mode does not have is an error naming the table.
  write("bad.toml", "[policy]\nname = \"streaming\"\n[policy.streaming]\nheavy_size = 3\n");
  auto bad = eval(concat(text_model_flags(), {"--config", "bad.toml", "--data_dir", "data",
                                              "--output_dir", "o"}));
  EXPECT_EQ(bad.rc, 2);
  EXPECT_NE(bad.err.find("[policy.streaming]"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("heavy_size"), std::string::npos) << bad.err;
  EXPECT_EQ(count_files("o"), 0);
}

}  // namespace

namespace {

TEST_F(Programs, PerModeTableOfAnUnknownModeIsAnError) {
  write("c.toml", "[policy]\nname = \"h2o\"\n[policy.snapvk]\nheavy_size = 5\n");
  auto r = eval(concat(text_model_flags(), {"--config", "c.toml", "--data_dir", "data",
                                            "--output_dir", "o"}));
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("[policy.snapvk]: no mode 'snapvk'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("did you mean [policy.snapkv]"), std::string::npos) << r.err;
  auto b = bench({"--config", "c.toml", "--model_name_or_path", "synthetic:pythia-70m",
                  "--output_dir", "o"});
  EXPECT_EQ(b.rc, 2);
  EXPECT_NE(b.err.find("[policy.snapvk]"), std::string::npos) << b.err;
  EXPECT_EQ(count_files("o"), 0);
}

}  // namespace
