// kvc-generate run as a program: the text on stdout is the library's generation, the prompt
// sources agree, a seed repeats, --stop, a policy from TOML, the JSON record, and bad input
// (exit status 2 or 1, a message naming the flag, no JSON file left behind).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kvc/kvc.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kModel = std::string(KVC_SOURCE_DIR) + "/models/kjv-mini";
const std::string kPrompt = "And God said, Let there be light: and there was";

struct Result {
  int rc = -1;
  std::string out, err;
};

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

class GenerateProgram : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kModel + "/config.json")) GTEST_SKIP() << "no " << kModel;
    dir_ = fs::temp_directory_path() /
           ("kvc-generate-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure() && !dir_.empty()) fs::remove_all(dir_);
  }
  void write(const std::string& name, const std::string& content) {
    std::ofstream(dir_ / name, std::ios::binary) << content;
  }
  // Runs kvc-generate in the test folder with the model and one thread, `input` on stdin.
  Result run(std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), {"--model_name_or_path", kModel, "--threads", "1"});
    write(".stdin", input);
    pid_t pid = fork();
    if (pid == 0) {
      if (chdir(dir_.c_str()) != 0) _exit(126);
      int in = open(".stdin", O_RDONLY);
      int out = open(".stdout", O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int err = open(".stderr", O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(in, 0);
      dup2(out, 1);
      dup2(err, 2);
      std::vector<char*> argv = {const_cast<char*>(KVC_GENERATE_EXE)};
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(KVC_GENERATE_EXE, argv.data());
      _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    Result r;
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(dir_ / ".stdout");
    r.err = slurp(dir_ / ".stderr");
    for (const char* f : {".stdin", ".stdout", ".stderr"}) fs::remove(dir_ / f);
    return r;
  }
  json read_json(const std::string& name) { return json::parse(slurp(dir_ / name)); }

  // The library's greedy generation of `n` tokens after kPrompt (full cache).
  std::vector<int32_t> library_greedy(int32_t n) {
    kvc_model_options mo;
    kvc_model_options_init(&mo);
    mo.backend = KVC_BACKEND_CPU;
    mo.n_threads = 1;
    kvc_model* m = nullptr;
    EXPECT_EQ(kvc_model_load(kModel.c_str(), &mo, &m), KVC_OK) << kvc_last_error();
    std::vector<int32_t> ids(256);
    size_t n_ids = 0;
    EXPECT_EQ(kvc_tokenize(kvc_model_tokenizer(m), kPrompt.data(), kPrompt.size(), ids.data(),
                           ids.size(), &n_ids), KVC_OK);
    kvc_session* s = nullptr;
    EXPECT_EQ(kvc_session_create(m, nullptr, &s), KVC_OK);
    kvc_generate_options o;
    kvc_generate_options_init(&o);
    o.max_tokens = n;
    const int32_t eos = kvc_tokenizer_token_to_id(kvc_model_tokenizer(m), "<|endoftext|>");
    o.stop_tokens = &eos;
    o.n_stop_tokens = eos >= 0 ? 1 : 0;
    std::vector<int32_t> out(static_cast<size_t>(n));
    kvc_generate_result r;
    kvc_generate_result_init(&r);
    EXPECT_EQ(kvc_generate(s, nullptr, ids.data(), n_ids, &o, out.data(), out.size(), &r), KVC_OK);
    out.resize(static_cast<size_t>(r.n_tokens));
    kvc_session_free(s);
    kvc_model_free(m);
    return out;
  }

  fs::path dir_;
};

TEST_F(GenerateProgram, StreamsTheLibrarysGenerationAndWritesTheRecord) {
  const Result r = run({"--prompt", kPrompt, "--max_tokens", "16", "--temperature", "0",
                        "--json", "out/g.json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const json j = read_json("out/g.json");
  EXPECT_EQ(j["program"], "kvc-generate");
  EXPECT_EQ(j["mode"], "baseline");
  EXPECT_EQ(j["output"]["text"], r.out);
  EXPECT_EQ(j["output"]["tokens"].get<std::vector<int32_t>>(), library_greedy(16));
  EXPECT_EQ(j["prompt"]["text"], kPrompt);
  EXPECT_EQ(j["prompt"]["source"], "argument");
  EXPECT_EQ(j["prompt"]["prefill"], "batch");
  for (const char* key : {"time_to_first_token_ms", "decode_tokens_per_sec", "tokens_per_sec",
                          "wall_time_s"})
    EXPECT_TRUE(j["timing"][key].is_number()) << key;
  EXPECT_GT(j["timing"]["time_to_first_token_ms"].get<double>(), 0.0);
  const int64_t n = j["output"]["num_tokens"];
  const int64_t prompt_tokens = j["prompt"]["num_tokens"];
  EXPECT_EQ(j["cache_size"]["max"], prompt_tokens + n - 1);  // the last token is not fed
  EXPECT_EQ(j["sampler"]["temperature"], 0.0);
  EXPECT_TRUE(j["model"].is_object());
  EXPECT_TRUE(j["settings"]["generate"].is_object());
  for (const char* word : {"time to first token", "tokens/s", "cache", "stop:"})
    EXPECT_NE(r.err.find(word), std::string::npos) << word << " in " << r.err;
}

TEST_F(GenerateProgram, PromptFromArgumentFileAndStdinAgree) {
  write("p.txt", kPrompt);
  const std::vector<std::string> common = {"--max_tokens", "12", "--temperature", "0"};
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.end(), common.begin(), common.end());
    return a;
  };
  const Result a = run(with({"--prompt", kPrompt}));
  const Result f = run(with({"--prompt_file", "p.txt", "--json", "f.json"}));
  const Result s = run(with({}), kPrompt);
  ASSERT_EQ(a.rc, 0) << a.err;
  ASSERT_EQ(f.rc, 0) << f.err;
  ASSERT_EQ(s.rc, 0) << s.err;
  EXPECT_FALSE(a.out.empty());
  EXPECT_EQ(a.out, f.out);
  EXPECT_EQ(a.out, s.out);
  EXPECT_EQ(read_json("f.json")["prompt"]["source"], "file");
}

TEST_F(GenerateProgram, SeedRepeatsAndAnotherSeedDiffers) {
  auto sample = [&](const std::string& seed) {
    return run({"--prompt", kPrompt, "--max_tokens", "32", "--temperature", "1", "--top_k", "50",
                "--seed", seed});
  };
  const Result a = sample("5"), b = sample("5"), c = sample("6");
  ASSERT_EQ(a.rc, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
}

TEST_F(GenerateProgram, StopSequenceEndsTheText) {
  const Result full = run({"--prompt", kPrompt, "--max_tokens", "40", "--temperature", "0",
                           "--repetition_penalty", "1.3"});
  ASSERT_EQ(full.rc, 0) << full.err;
  ASSERT_GT(full.out.size(), 20u);
  // Three characters from the middle of the text, stopping at their first occurrence.
  const std::string stop = full.out.substr(full.out.size() / 2, 3);
  const size_t at = full.out.find(stop);
  std::string escaped;
  for (char c : stop) {
    if (c == '\n') escaped += "\\n";
    else if (c == '|' || c == '\\') escaped += std::string("\\") + c;
    else escaped += c;
  }
  const Result r = run({"--prompt", kPrompt, "--max_tokens", "40", "--temperature", "0",
                        "--repetition_penalty", "1.3", "--stop", "zzzz|" + escaped, "--json",
                        "s.json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, full.out.substr(0, at));
  const json j = read_json("s.json");
  EXPECT_EQ(j["output"]["stop_reason"], "stop_sequence");
  EXPECT_EQ(j["output"]["stop"], stop);
  EXPECT_EQ(j["sampler"]["stop"], json::array({"zzzz", stop}));
}

TEST_F(GenerateProgram, PolicyAndSamplingFromToml) {
  write("c.toml",
        "[policy]\nname = \"streaming\"\nstart_size = 4\nrecent_size = 8\n"
        "[generate]\nmax_tokens = 30\ntemperature = 0\nprefill = \"stream\"\n"
        "json = \"out/t.json\"\n");
  const Result r = run({"--config", "c.toml", "--prompt", kPrompt});
  ASSERT_EQ(r.rc, 0) << r.err;
  const json j = read_json("out/t.json");
  EXPECT_EQ(j["mode"], "streaming");
  EXPECT_EQ(j["config"]["recent_size"], 8);
  EXPECT_EQ(j["prompt"]["prefill"], "stream");
  EXPECT_LE(j["cache_size"]["max"].get<int64_t>(), 12);
  EXPECT_GT(j["cache_size"]["evictions"].get<int64_t>(), 0);
  EXPECT_EQ(j["output"]["text"], r.out);
}

TEST_F(GenerateProgram, BadInputIsAUsageErrorNamingTheFlag) {
  struct Case {
    std::vector<std::string> args;
    int rc;
    std::vector<std::string> words;
    std::string input;
  };
  write("p.txt", kPrompt);
  write("bad.toml", "[generate]\ntop_k = \"many\"\n");
  const std::vector<Case> cases = {
      {{"--prompt", "x", "--temperature", "-1"}, 2, {"--temperature", "-1"}, ""},
      {{"--prompt", "x", "--top_p", "0"}, 2, {"--top_p", "0", "(0, 1]"}, ""},
      {{"--prompt", "x", "--top_p", "1.5"}, 2, {"--top_p", "1.5"}, ""},
      {{"--prompt", "x", "--min_p", "-0.5"}, 2, {"--min_p", "-0.5"}, ""},
      {{"--prompt", "x", "--top_k", "-2"}, 2, {"--top_k"}, ""},
      {{"--prompt", "x", "--max_tokens", "-1"}, 2, {"--max_tokens"}, ""},
      {{"--prompt", "x", "--repetition_penalty", "0"}, 2, {"--repetition_penalty"}, ""},
      {{"--prompt", "x", "--prompt_file", "p.txt"}, 2, {"--prompt", "--prompt_file"}, ""},
      {{"--prompt_file", "missing.txt"}, 1, {"missing.txt"}, ""},
      {{}, 2, {"standard input", "empty"}, ""},
      {{"--prompt", "x", "--stop", "a||b"}, 2, {"--stop", "empty stop sequence"}, ""},
      {{"--prompt", "x", "--stop", "a\\"}, 2, {"--stop", "lone"}, ""},
      {{"--prompt", "x", "--mode", "all"}, 2, {"--mode all"}, ""},
      {{"--prompt", "x", "--prefill", "chunked"}, 2, {"--prefill", "batch, stream"}, ""},
      {{"--prompt", "x", "--config", "bad.toml"}, 2, {"bad.toml", "top_k"}, ""},
      {{"--prompt", "x", "--mode", "no_such_policy"}, 2, {"no_such_policy"}, ""},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = c.args;
    args.insert(args.end(), {"--json", "out/bad.json"});
    const Result r = run(args, c.input);
    std::string cmd;
    for (const auto& a : c.args) cmd += a + " ";
    EXPECT_EQ(r.rc, c.rc) << cmd << "\n" << r.err;
    for (const auto& w : c.words)
      EXPECT_NE(r.err.find(w), std::string::npos) << cmd << ": '" << w << "' in " << r.err;
    EXPECT_TRUE(r.out.empty()) << cmd;
    EXPECT_FALSE(fs::exists(dir_ / "out/bad.json")) << cmd;
  }
}

}  // namespace
