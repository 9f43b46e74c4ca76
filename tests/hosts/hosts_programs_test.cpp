// kvc-eval and kvc-bench run as programs: output schemas, agreement with the library's own
// scorer, the plot, and bad input (each: non-zero exit, a message naming the culprit, and no
// result file left behind).
//
// The text model is the embedded models/kjv-mini when present, else synthetic:pythia-70m with
// Pythia's tokenizer from ../shared/data. Runs are kept to a few dozen tokens, on one thread
// each (ctest -j2 runs two at once on two cores).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kvc/kvc.h"
#include "program_test_support.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using namespace kvc_test;

// The PPL the library's own scorer gives for the same tokens and policy (stream mode, one call
// per file), to compare with kvc-eval's token-by-token loop.
struct LibraryScore {
  double nll_sum = 0;
  int64_t n = 0;
};

LibraryScore library_score(const std::vector<std::string>& texts, const char* policy,
                           const std::vector<kvc_param>& params, kvc_score_mode mode,
                           size_t chunk) {
  LibraryScore result;
  kvc_model_options mo;
  kvc_model_options_init(&mo);
  mo.n_threads = 1;
  kvc_model* model = nullptr;
  std::string path = has_kjv_mini() ? std::string(KVC_SOURCE_DIR) + "/models/kjv-mini"
                                    : "synthetic:pythia-70m";
  EXPECT_EQ(kvc_model_load(path.c_str(), &mo, &model), KVC_OK) << kvc_last_error();
  if (!model) return result;
  kvc_tokenizer* own = nullptr;
  const kvc_tokenizer* tokenizer = kvc_model_tokenizer(model);
  if (!tokenizer) {
    std::string t = std::string(KVC_SHARED_DATA_DIR) + "/gpt-neox-20b-tokenizer.json";
    EXPECT_EQ(kvc_tokenizer_load(t.c_str(), &own), KVC_OK) << kvc_last_error();
    tokenizer = own;
  }
  kvc_session_options so;
  kvc_session_options_init(&so);
  so.policy = policy;
  so.params = params.data();
  so.n_params = params.size();
  so.policy_path = KVC_BUILD_POLICY_DIR;
  kvc_session* session = nullptr;
  EXPECT_EQ(kvc_session_create(model, &so, &session), KVC_OK) << kvc_last_error();
  kvc_score_options sc;
  kvc_score_options_init(&sc);
  sc.mode = mode;
  for (const auto& text : texts) {
    std::vector<int32_t> ids(text.size() + 8);
    size_t n = 0;
    EXPECT_EQ(kvc_tokenize(tokenizer, text.data(), text.size(), ids.data(), ids.size(), &n),
              KVC_OK);
    ids.resize(n);
    // Each chunk (or the whole text) is scored from an empty cache.
    const size_t step = chunk ? chunk : ids.size();
    for (size_t first = 0; first + 1 < ids.size(); first += step) {
      const size_t length = std::min(step, ids.size() - first);
      if (length < 2) break;
      std::vector<float> nll(length - 1);
      EXPECT_EQ(kvc_session_reset(session), KVC_OK);
      EXPECT_EQ(kvc_session_score(session, ids.data() + first, length, &sc, nll.data(),
                                  nll.size()),
                KVC_OK)
          << kvc_last_error();
      for (float v : nll) result.nll_sum += v;
      result.n += static_cast<int64_t>(nll.size());
    }
  }
  kvc_session_free(session);
  if (own) kvc_tokenizer_free(own);
  kvc_model_free(model);
  return result;
}

void expect_eval_schema(const json& j, const std::string& mode) {
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.at("mode"), mode);
  for (const char* key : {"ppl", "tokens_per_sec", "wall_time_s"}) {
    EXPECT_TRUE(j.at(key).is_number()) << key;
  }
  for (const char* key : {"num_tokens", "num_samples", "num_skipped_files",
                          "extrapolated_tokens"}) {
    EXPECT_TRUE(j.at(key).is_number_integer()) << key;
  }
  EXPECT_TRUE(j.at("config").is_object());
  EXPECT_TRUE(j.at("cache_size").at("max").is_number_integer());
  EXPECT_TRUE(j.at("cache_size").at("mean").is_number());
  EXPECT_TRUE(j.at("model").at("path").is_string());
  EXPECT_TRUE(j.at("model").at("max_position_embeddings").is_number_integer());
  EXPECT_TRUE(j.at("skipped_files").is_array());
  EXPECT_TRUE(j.at("protocol").is_string());
  EXPECT_TRUE(j.at("positions").is_string());
  ASSERT_TRUE(j.at("files").is_array());
  int64_t sum = 0;
  for (const auto& f : j.at("files")) {
    EXPECT_TRUE(f.at("file").is_string());
    EXPECT_TRUE(f.at("ppl").is_number());
    EXPECT_TRUE(f.at("cache_size").is_object());
    sum += f.at("num_tokens").get<int64_t>();
  }
  EXPECT_EQ(sum, j.at("num_tokens").get<int64_t>());
  EXPECT_EQ(j.at("files").size(), j.at("num_samples").get<size_t>());
  EXPECT_GT(j.at("ppl").get<double>(), 1.0);
}

// ---- perplexity -----------------------------------------------------------------------------

TEST_F(Programs, EvalStreamingMatchesLibraryScore) {
  auto r = eval(concat(text_model_flags(),
                       {"--mode", "streaming", "--start_size", "2", "--recent_size", "6",
                        "--data_dir", "data", "--output_dir", "out", "--num_eval_tokens", "1000"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  json j = read_json("out/ppl_results_streaming.json");
  expect_eval_schema(j, "streaming");
  EXPECT_EQ(j.at("config"), json({{"start_size", 2}, {"recent_size", 6}}));
  EXPECT_EQ(j.at("cache_size").at("max"), 8);
  EXPECT_EQ(j.at("num_samples"), 2);

  std::vector<kvc_param> params = {{"start_size", "2"}, {"recent_size", "6"}};
  LibraryScore lib = library_score({kText1, kText2}, "streaming", params, KVC_SCORE_STREAM, 0);
  ASSERT_EQ(j.at("num_tokens").get<int64_t>(), lib.n);
  const double ppl_lib = std::exp(lib.nll_sum / static_cast<double>(lib.n));
  // Both sum float NLLs of the same logits; the host computes log-softmax in double.
  EXPECT_NEAR(j.at("ppl").get<double>(), ppl_lib, 1e-5 * ppl_lib);
}

TEST_F(Programs, EvalChunkedBaselineMatchesLibraryPrefill) {
  auto r = eval(concat(text_model_flags(), {"--mode", "baseline", "--chunk_size", "16",
                                            "--data_dir", "data", "--num_samples", "1",
                                            "--output_dir", "out"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  json j = read_json("out/ppl_results_baseline.json");
  expect_eval_schema(j, "baseline");
  EXPECT_EQ(j.at("protocol"), "chunked");
  EXPECT_EQ(j.at("cache_size").at("max"), 15);  // entries when the last token is predicted
  EXPECT_EQ(j.at("num_samples"), 1);
  // The same 16-token chunks, each scored alone by the library in prefill mode.
  LibraryScore lib = library_score({kText1}, "baseline", {}, KVC_SCORE_PREFILL, 16);
  ASSERT_EQ(j.at("num_tokens").get<int64_t>(), lib.n);
  const double ppl_lib = std::exp(lib.nll_sum / static_cast<double>(lib.n));
  EXPECT_NEAR(j.at("ppl").get<double>(), ppl_lib, 1e-6 * ppl_lib);
}

TEST_F(Programs, EvalDenseAndSlidingBaselines) {
  auto dense = eval(concat(text_model_flags(), {"--mode", "baseline", "--baseline", "dense",
                                                "--data_dir", "data", "--output_dir", "out",
                                                "--num_eval_tokens", "30"}));
  ASSERT_EQ(dense.rc, 0) << dense.err;
  json d = read_json("out/ppl_results_baseline_dense.json");
  expect_eval_schema(d, "baseline_dense");
  EXPECT_EQ(d.at("num_tokens"), 30);
  EXPECT_EQ(d.at("extrapolated_tokens"), 0);
  // A window larger than the text recomputes the full prefix: the dense result exactly.
  auto sliding = eval(concat(text_model_flags(),
                             {"--mode", "baseline", "--baseline", "sliding", "--window", "1000",
                              "--stride", "7", "--data_dir", "data", "--output_dir", "out",
                              "--num_eval_tokens", "30"}));
  ASSERT_EQ(sliding.rc, 0) << sliding.err;
  json s = read_json("out/ppl_results_baseline_sliding.json");
  expect_eval_schema(s, "baseline_sliding");
  EXPECT_EQ(s.at("num_tokens"), 30);
  EXPECT_NEAR(s.at("ppl").get<double>(), d.at("ppl").get<double>(),
              2e-4 * d.at("ppl").get<double>());
}

TEST_F(Programs, EvalModeAllWritesTheTable) {
  auto r = eval(concat(text_model_flags(), {"--mode", "all", "--data_dir", "data",
                                            "--num_samples", "1", "--num_eval_tokens", "12",
                                            "--output_dir", "out", "--start_size", "2",
                                            "--recent_size", "4", "--heavy_size", "2",
                                            "--separator_size", "2", "--local_size", "4",
                                            "--cache_size", "10"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  for (const char* mode : {"baseline", "baseline_dense", "streaming", "h2o", "lazy_h2o",
                           "sepllm", "unified"}) {
    ASSERT_TRUE(fs::exists(dir_ / "out" / (std::string("ppl_results_") + mode + ".json")))
        << mode;
    expect_eval_schema(read_json(std::string("out/ppl_results_") + mode + ".json"), mode);
  }
  const std::string table = slurp(dir_ / "out/ppl_results_table.md");
  EXPECT_NE(table.find("| Method"), std::string::npos) << table;
  EXPECT_NE(table.find("baseline (512-chunk)"), std::string::npos) << table;
  EXPECT_NE(table.find("| h2o"), std::string::npos) << table;
  EXPECT_NE(r.out.find("| Method"), std::string::npos);  // printed too
}

TEST_F(Programs, EvalConfigFileAndPrecedence) {
  write("c.toml", "[policy]\nname = \"streaming\"\nstart_size = 2\nrecent_size = 30\n"
                  "[eval]\ndata_dir = \"data\"\nnum_eval_tokens = 20\noutput_dir = \"cfg\"\n");
  auto r = eval(concat(text_model_flags(), {"--config", "c.toml", "--recent_size", "5"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  json j = read_json("cfg/ppl_results_streaming.json");
  EXPECT_EQ(j.at("config"), json({{"start_size", 2}, {"recent_size", 5}}));
  EXPECT_EQ(j.at("num_tokens"), 20);
}

// A plugin given by path (how an uninstalled third-party policy is used) is labelled with the
// name in its descriptor.
TEST_F(Programs, EvalPolicyGivenByPath) {
  const std::string so = std::string(KVC_BUILD_POLICY_DIR) + "/libkvc_policy_streaming.so";
  auto r = eval(concat(text_model_flags(), {"--mode", so, "--recent_size", "6", "--data_dir",
                                            "data", "--output_dir", "out",
                                            "--num_eval_tokens", "10"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  json j = read_json("out/ppl_results_streaming.json");
  EXPECT_EQ(j.at("config").at("recent_size"), 6);
  EXPECT_EQ(j.at("num_tokens"), 10);
}

// ---- decode speed ---------------------------------------------------------------------------

TEST_F(Programs, BenchWritesJsonAndPlot) {
  auto r = bench({"--model_name_or_path", "synthetic:pythia-70m", "--mode", "streaming",
                  "--start_size", "4", "--recent_size", "12", "--seq_lengths", "8", "32",
                  "--num_decode_tokens", "3", "--warmup", "0", "--repetitions", "2",
                  "--output_dir", "speed"});
  ASSERT_EQ(r.rc, 0) << r.err;
  json j = read_json("speed/speed_results_streaming.json");
  EXPECT_EQ(j.at("mode"), "streaming");
  EXPECT_TRUE(j.at("config").is_object());
  EXPECT_EQ(j.at("config").at("recent_size"), 12);
  ASSERT_EQ(j.at("results").size(), 2u);
  for (const auto& res : j.at("results")) {
    for (const char* key : {"avg_decode_latency_ms", "std_decode_latency_ms",
                            "total_decode_latency_ms", "tokens_per_sec",
                            "median_decode_latency_ms"}) {
      EXPECT_TRUE(res.at(key).is_number()) << key;
      EXPECT_GE(res.at(key).get<double>(), 0.0) << key;
    }
    EXPECT_GT(res.at("avg_decode_latency_ms").get<double>(), 0.0);
    EXPECT_EQ(res.at("repetition_avg_latency_ms").size(), 2u);
  }
  EXPECT_EQ(j.at("results")[0].at("seq_length"), 8);
  EXPECT_EQ(j.at("results")[0].at("kv_cache_size"), 8 + 3);  // below capacity: all kept
  EXPECT_EQ(j.at("results")[1].at("seq_length"), 32);
  EXPECT_EQ(j.at("results")[1].at("kv_cache_size"), 16);      // start + recent
  const std::string png = slurp(dir_ / "speed/speed_benchmark_streaming.png");
  ASSERT_GT(png.size(), 8u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
}

TEST_F(Programs, BenchWithoutGnuplotWarnsAndKeepsJson) {
  auto r = bench({"--model_name_or_path", "synthetic:pythia-70m", "--mode", "baseline",
                  "--seq_lengths", "4", "--num_decode_tokens", "2", "--warmup", "0",
                  "--repetitions", "1", "--output_dir", "speed"},
                 {{"KVC_GNUPLOT", "/nonexistent/gnuplot"}});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("gnuplot not found"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(dir_ / "speed/speed_results_baseline.json"));
  EXPECT_FALSE(fs::exists(dir_ / "speed/speed_benchmark_baseline.png"));
}

// ---- bad input ------------------------------------------------------------------------------

TEST_F(Programs, MissingAndEmptyDataDir) {
  auto missing = eval(concat(text_model_flags(), {"--data_dir", "nowhere", "--output_dir", "o"}));
  EXPECT_NE(missing.rc, 0);
  EXPECT_NE(missing.err.find("'nowhere' does not exist"), std::string::npos) << missing.err;
  fs::create_directories(dir_ / "empty");
  auto empty = eval(concat(text_model_flags(), {"--data_dir", "empty", "--output_dir", "o"}));
  EXPECT_NE(empty.rc, 0);
  EXPECT_NE(empty.err.find("'empty' contains no .txt files"), std::string::npos) << empty.err;
  EXPECT_EQ(count_files("o"), 0);
}

TEST_F(Programs, BadFilesAreSkippedAndCounted) {
  write("data/0_empty.txt", "");
  write("data/1_latin1.txt", "caf\xE9 au lait\n");
  auto r = eval(concat(text_model_flags(), {"--mode", "streaming", "--data_dir", "data",
                                            "--output_dir", "out", "--num_eval_tokens", "10"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("0_empty.txt': empty file"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("1_latin1.txt': not valid UTF-8 (byte 3)"), std::string::npos) << r.err;
  json j = read_json("out/ppl_results_streaming.json");
  EXPECT_EQ(j.at("num_skipped_files"), 2);
  EXPECT_EQ(j.at("skipped_files").size(), 2u);
  EXPECT_EQ(j.at("num_samples"), 1);  // the 10-token cap is reached in a.txt

  // Only unusable files: an error, no output.
  fs::remove(dir_ / "data/a.txt");
  fs::remove(dir_ / "data/b.txt");
  auto none = eval(concat(text_model_flags(), {"--mode", "streaming", "--data_dir", "data",
                                               "--output_dir", "none"}));
  EXPECT_NE(none.rc, 0);
  EXPECT_NE(none.err.find("all 2 .txt files were skipped"), std::string::npos) << none.err;
  EXPECT_EQ(count_files("none"), 0);
}

TEST_F(Programs, MissingModel) {
  auto r = eval({"--model_name_or_path", "pythia-2.8b-local", "--data_dir", "data",
                 "--output_dir", "o"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("model 'pythia-2.8b-local' not found"), std::string::npos) << r.err;
  auto b = bench({"--model_name_or_path", "pythia-2.8b-local", "--output_dir", "o"});
  EXPECT_EQ(b.rc, 1);
  EXPECT_NE(b.err.find("pythia-2.8b-local"), std::string::npos) << b.err;
  EXPECT_EQ(count_files("o"), 0);
}

TEST_F(Programs, BadTomlAndBadPolicyParameters) {
  write("bad.toml", "[eval]\nnum_samples = \"ten\"\n");
  auto r = eval({"--config", "bad.toml", "--output_dir", "o"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("bad.toml:2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[eval] num_samples"), std::string::npos) << r.err;

  write("unknown.toml", "[bench]\nseq_length = [256]\n");
  auto b = bench({"--config", "unknown.toml", "--output_dir", "o"});
  EXPECT_EQ(b.rc, 2);
  EXPECT_NE(b.err.find("unknown key 'seq_length' in [bench]"), std::string::npos) << b.err;

  // A [policy] key the policy does not have: rejected by the policy's schema, before any work.
  write("param.toml", "[policy]\nname = \"streaming\"\nwindow_size = 3\n");
  auto p = eval(concat(text_model_flags(),
                       {"--config", "param.toml", "--data_dir", "data", "--output_dir", "o"}));
  EXPECT_EQ(p.rc, 2);
  EXPECT_NE(p.err.find("window_size"), std::string::npos) << p.err;

  auto m = eval({"--mode", "stream", "--output_dir", "o"});
  EXPECT_EQ(m.rc, 2);
  EXPECT_NE(m.err.find("unknown policy 'stream'"), std::string::npos) << m.err;
  EXPECT_NE(m.err.find("streaming"), std::string::npos) << m.err;
  EXPECT_EQ(count_files("o"), 0);
}

TEST_F(Programs, SeqLengthsBeyondContext) {
  // synthetic:pythia-70m has 2048 positions; the full cache cannot hold 4096 tokens.
  auto r = bench({"--model_name_or_path", "synthetic:pythia-70m", "--mode", "baseline",
                  "--seq_lengths", "256", "4096", "--num_decode_tokens", "2",
                  "--output_dir", "speed"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--seq_lengths: 4096 beyond the context"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("2048"), std::string::npos) << r.err;
  EXPECT_EQ(count_files("speed"), 0);
}

}  // namespace
