// Settings of kvc-eval / kvc-bench without the engine: the seed's commands, flag syntax,
// config precedence, TOML errors, and the file helpers.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "files.h"
#include "options.h"
#include "report.h"
#include "schema.h"

namespace fs = std::filesystem;
using namespace kvc::hosts;

namespace {

std::vector<std::string> split(const std::string& command) {
  std::istringstream in(command);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

// The arguments of a seed command after "python evaluate/<script>.py".
Options parse_seed(Program program, const std::string& command) {
  auto words = split(command);
  EXPECT_GE(words.size(), 2u);
  words.erase(words.begin(), words.begin() + 2);
  Options o = make_options(program);
  EXPECT_TRUE(o.parse(words));
  return o;
}

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("kvc-hosts-cli-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  fs::path write(const std::string& name, const std::string& content) const {
    fs::path p = path_ / name;
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string usage_error(Options& o, const std::vector<std::string>& args) {
  try {
    o.parse(args);
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

std::string toml_error(Program program, const std::string& text) {
  Options o = make_options(program);
  try {
    o.load_toml_string(text, "test.toml");
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// ---- the seed README's commands, verbatim ---------------------------------------------------

TEST(SeedCommands, PerplexityCommandsParse) {
  {
    auto o = parse_seed(Program::Eval,
                        "python evaluate/eval_ppl_pg19.py --mode baseline --num_samples 10");
    EXPECT_EQ(o.get_string("policy", "name"), "baseline");
    EXPECT_EQ(o.get_int("eval", "num_samples"), 10);
  }
  {
    auto o = parse_seed(Program::Eval,
                        "python evaluate/eval_ppl_pg19.py --mode streaming --start_size 4 "
                        "--recent_size 252 --num_samples 10");
    EXPECT_EQ(o.get_string("policy", "name"), "streaming");
    EXPECT_EQ(o.get_int("policy", "start_size"), 4);
    EXPECT_EQ(o.get_int("policy", "recent_size"), 252);
  }
  {
    auto o = parse_seed(Program::Eval,
                        "python evaluate/eval_ppl_pg19.py --mode h2o --start_size 4 "
                        "--recent_size 128 --heavy_size 128 --num_samples 10");
    EXPECT_EQ(o.get_string("policy", "name"), "h2o");
    EXPECT_EQ(o.get_int("policy", "recent_size"), 128);
    EXPECT_EQ(o.get_int("policy", "heavy_size"), 128);
  }
  {
    auto o = parse_seed(Program::Eval,
                        "python evaluate/eval_ppl_pg19.py --mode lazy_h2o --start_size 4 "
                        "--recent_size 128 --heavy_size 128 --update_interval 10 "
                        "--num_samples 10");
    EXPECT_EQ(o.get_string("policy", "name"), "lazy_h2o");
    EXPECT_EQ(o.get_int("policy", "update_interval"), 10);
    EXPECT_EQ(o.source("policy", "update_interval"), Source::CommandLine);
  }
}

TEST(SeedCommands, SpeedCommandsParse) {
  {
    auto o = parse_seed(Program::Bench,
                        "python evaluate/eval_speed_benchmark.py --mode baseline --seq_lengths "
                        "256 512 1024 2048");
    EXPECT_EQ(o.get_string("policy", "name"), "baseline");
    EXPECT_EQ(o.get_int_list("bench", "seq_lengths"), (std::vector<int64_t>{256, 512, 1024, 2048}));
  }
  for (const char* mode : {"streaming", "h2o"}) {
    auto o = parse_seed(Program::Bench,
                        std::string("python evaluate/eval_speed_benchmark.py --mode ") + mode +
                            " --seq_lengths 256 512 1024 2048 4096");
    EXPECT_EQ(o.get_string("policy", "name"), mode);
    EXPECT_EQ(o.get_int_list("bench", "seq_lengths"),
              (std::vector<int64_t>{256, 512, 1024, 2048, 4096}));
  }
  {
    auto o = parse_seed(Program::Bench,
                        "python evaluate/eval_speed_benchmark.py --mode lazy_h2o "
                        "--update_interval 10 --seq_lengths 256 512 1024 2048 4096");
    EXPECT_EQ(o.get_int("policy", "update_interval"), 10);
    EXPECT_EQ(o.get_int_list("bench", "seq_lengths").size(), 5u);
  }
}

TEST(SeedCommands, DefaultsMatchTheSeedTables) {
  Options e = make_options(Program::Eval);
  ASSERT_TRUE(e.parse(std::vector<std::string>{}));
  EXPECT_EQ(e.get_string("policy", "name"), "baseline");
  EXPECT_EQ(e.get_int("eval", "num_samples"), 10);
  EXPECT_FALSE(e.get_opt_int("eval", "num_eval_tokens").has_value());
  EXPECT_EQ(e.get_int("policy", "start_size"), 4);
  EXPECT_EQ(e.get_int("policy", "recent_size"), 252);
  EXPECT_EQ(e.get_int("policy", "heavy_size"), 128);
  EXPECT_EQ(e.get_int("policy", "update_interval"), 10);
  EXPECT_EQ(e.get_int("policy", "separator_size"), 64);
  EXPECT_EQ(e.get_int("policy", "local_size"), 256);
  EXPECT_EQ(e.get_string("eval", "output_dir"), "outputs/ppl_pg19");
  EXPECT_EQ(e.get_string("model", "path"), kDefaultModel);
  EXPECT_EQ(e.get_string("eval", "data_dir"), kDefaultDataDir);
  Options b = make_options(Program::Bench);
  ASSERT_TRUE(b.parse(std::vector<std::string>{}));
  EXPECT_EQ(b.get_int_list("bench", "seq_lengths"), (std::vector<int64_t>{256, 512, 1024, 2048}));
  EXPECT_EQ(b.get_int("bench", "num_decode_tokens"), 128);
  EXPECT_EQ(b.get_string("bench", "output_dir"), "outputs/speed_benchmark");
}

// ---- flag syntax ----------------------------------------------------------------------------

TEST(Flags, EqualsAndSpaceFormsAgree) {
  Options a = make_options(Program::Eval);
  Options b = make_options(Program::Eval);
  ASSERT_TRUE(a.parse(split("--mode streaming --num_eval_tokens 100 --positions original "
                            "--continuous_cache --threads 2")));
  ASSERT_TRUE(b.parse(split("--mode=streaming --num_eval_tokens=100 --positions=original "
                            "--continuous_cache=true --threads=2")));
  for (const auto& [section, key] : std::vector<std::pair<std::string, std::string>>{
           {"policy", "name"}, {"eval", "num_eval_tokens"}, {"policy", "positions"},
           {"eval", "continuous_cache"}, {"model", "threads"}}) {
    EXPECT_EQ(to_text(a.get(section, key).value), to_text(b.get(section, key).value)) << key;
  }
  EXPECT_TRUE(a.get_bool("eval", "continuous_cache"));
}

TEST(Flags, ListsTakeSeveralValuesOrCommas) {
  Options a = make_options(Program::Bench);
  ASSERT_TRUE(a.parse(split("--seq_lengths 8 16 32 --num_decode_tokens 4")));
  EXPECT_EQ(a.get_int_list("bench", "seq_lengths"), (std::vector<int64_t>{8, 16, 32}));
  EXPECT_EQ(a.get_int("bench", "num_decode_tokens"), 4);
  Options b = make_options(Program::Bench);
  ASSERT_TRUE(b.parse(split("--seq_lengths=8,16,32")));
  EXPECT_EQ(b.get_int_list("bench", "seq_lengths"), (std::vector<int64_t>{8, 16, 32}));
}

TEST(Flags, NoneAndParamPairs) {
  Options o = make_options(Program::Eval);
  ASSERT_TRUE(o.parse(split("--num_eval_tokens None --param score_layers=0,1 "
                            "--param scope=per_head")));
  EXPECT_FALSE(o.get_opt_int("eval", "num_eval_tokens").has_value());
  const auto& extra = o.extra_policy_params();
  ASSERT_EQ(extra.size(), 2u);
  EXPECT_EQ(extra[0].name, "score_layers");
  EXPECT_EQ(std::get<std::string>(extra[0].value), "0,1");  // text: the library parses it
  EXPECT_EQ(extra[0].source, Source::CommandLine);
  EXPECT_EQ(extra[1].name, "scope");
  EXPECT_EQ(std::get<std::string>(extra[1].value), "per_head");
}

TEST(Flags, AParameterGivenTwiceIsAnError) {
  Options o = make_options(Program::Eval);
  try {
    o.parse(split("--param scope=shared --param scope=per_head"));
    FAIL() << "no error";
  } catch (const UsageError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("--param scope=per_head"), std::string::npos) << m;
    EXPECT_NE(m.find("--param scope=shared"), std::string::npos) << m;
  }
}

TEST(Flags, HelpIsReported) {
  Options o = make_options(Program::Eval);
  EXPECT_FALSE(o.parse(split("--mode h2o --help")));
  std::string help = o.help_text("[options]");
  for (const char* flag : {"--mode", "--model_name_or_path", "--data_dir", "--num_samples",
                           "--num_eval_tokens", "--start_size", "--recent_size", "--heavy_size",
                           "--update_interval", "--separator_size", "--local_size",
                           "--cache_size", "--scope", "--positions", "--config", "--output_dir",
                           "--threads", "--dtype", "--backend", "--policy_path", "--baseline",
                           "--chunk_size", "--window", "--stride", "--continuous_cache",
                           "--seed"}) {
    EXPECT_NE(help.find(flag), std::string::npos) << flag;
  }
  Options b = make_options(Program::Bench);
  std::string bench_help = b.help_text("[options]");
  for (const char* flag : {"--seq_lengths", "--num_decode_tokens", "--warmup", "--repetitions",
                           "--seed", "--output_dir"}) {
    EXPECT_NE(bench_help.find(flag), std::string::npos) << flag;
  }
}

TEST(Flags, ErrorsNameTheFlagAndTheAllowedValues) {
  {
    Options o = make_options(Program::Eval);
    auto m = usage_error(o, split("--recnt_size 4"));
    EXPECT_NE(m.find("--recnt_size"), std::string::npos) << m;
    EXPECT_NE(m.find("--recent_size"), std::string::npos) << m;  // the suggestion
  }
  {
    Options o = make_options(Program::Eval);
    auto m = usage_error(o, split("--num_samples 0"));
    EXPECT_NE(m.find("--num_samples"), std::string::npos) << m;
    EXPECT_NE(m.find(">= 1"), std::string::npos) << m;
  }
  {
    Options o = make_options(Program::Eval);
    auto m = usage_error(o, split("--num_samples ten"));
    EXPECT_NE(m.find("'ten'"), std::string::npos) << m;
  }
  {
    Options o = make_options(Program::Eval);
    auto m = usage_error(o, split("--positions absolute"));
    EXPECT_NE(m.find("shift, original"), std::string::npos) << m;
  }
  {
    Options o = make_options(Program::Eval);
    auto m = usage_error(o, split("--baseline chunky"));
    EXPECT_NE(m.find("chunked, dense, sliding"), std::string::npos) << m;
  }
  {
    Options o = make_options(Program::Bench);
    EXPECT_NE(usage_error(o, split("--seq_lengths --mode h2o")).find("--seq_lengths"),
              std::string::npos);
  }
  {
    Options o = make_options(Program::Bench);
    EXPECT_NE(usage_error(o, split("--mode")).find("--mode expects a value"), std::string::npos);
  }
  {
    // Programs only take their own flags.
    Options o = make_options(Program::Eval);
    EXPECT_NE(usage_error(o, split("--seq_lengths 256")).find("unknown flag --seq_lengths"),
              std::string::npos);
    Options b = make_options(Program::Bench);
    EXPECT_NE(usage_error(b, split("--data_dir x")).find("unknown flag --data_dir"),
              std::string::npos);
  }
  {
    Options o = make_options(Program::Eval);
    EXPECT_NE(usage_error(o, split("streaming")).find("unexpected argument 'streaming'"),
              std::string::npos);
  }
}

// ---- config files and precedence ------------------------------------------------------------

TEST(Config, CommandLineOverridesConfigOverridesDefaults) {
  TempDir dir;
  auto config = dir.write("c.toml", R"(
[model]
threads = 3
[policy]
name = "h2o"
recent_size = 100
heavy_size = 50
score_layers = [0, 1]
scope = "shared"
[eval]
num_samples = 2
output_dir = "from-config"
[bench]
seq_lengths = [8, 16]
)");
  Options o = make_options(Program::Eval);
  ASSERT_TRUE(o.parse(split("--recent_size 60 --config " + config.string() + " --num_samples 5")));
  EXPECT_EQ(o.get_string("policy", "name"), "h2o");  // config
  EXPECT_EQ(o.source("policy", "name"), Source::Config);
  EXPECT_EQ(o.get_int("policy", "recent_size"), 60);  // flag before --config still wins
  EXPECT_EQ(o.source("policy", "recent_size"), Source::CommandLine);
  EXPECT_EQ(o.get_int("policy", "heavy_size"), 50);
  EXPECT_EQ(o.get_int("eval", "num_samples"), 5);
  EXPECT_EQ(o.get_string("eval", "output_dir"), "from-config");
  EXPECT_EQ(o.get_int("model", "threads"), 3);
  EXPECT_EQ(o.get_int("policy", "start_size"), 4);  // default
  EXPECT_EQ(o.source("policy", "start_size"), Source::Default);
  EXPECT_EQ(o.get_string("policy", "scope"), "shared");
  // Other [policy] keys are policy parameters, typed as TOML typed them.
  ASSERT_EQ(o.extra_policy_params().size(), 1u);
  EXPECT_EQ(o.extra_policy_params()[0].name, "score_layers");
  EXPECT_EQ(std::get<std::vector<int64_t>>(o.extra_policy_params()[0].value),
            (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(o.extra_policy_params()[0].source, Source::Config);
  // kvc-bench reads the same file; [eval] is checked but not used.
  Options b = make_options(Program::Bench);
  ASSERT_TRUE(b.parse(split("--config=" + config.string() + " --seq_lengths 32")));
  EXPECT_EQ(b.get_int_list("bench", "seq_lengths"), (std::vector<int64_t>{32}));
  EXPECT_EQ(b.get_string("bench", "output_dir"), "outputs/speed_benchmark");
}

TEST(Config, PolicyParamsFromConfigAndFlags) {
  Options o = make_options(Program::Eval);
  o.load_toml_string("[policy]\nseparators = [15, 13]\nthreshold = 0.5\nflag = true\n"
                     "separator_strings = [\"amen\", \"selah\"]\n",
                     "t.toml");
  ASSERT_TRUE(o.parse(split("--param threshold=0.25")));
  std::map<std::string, ParamValue> params;
  for (const auto& p : o.extra_policy_params()) params.emplace(p.name, p.value);
  EXPECT_EQ(std::get<std::vector<int64_t>>(params["separators"]), (std::vector<int64_t>{15, 13}));
  EXPECT_EQ(std::get<std::string>(params["threshold"]), "0.25");  // the flag replaced 0.5
  EXPECT_EQ(std::get<bool>(params["flag"]), true);
  // A TOML array of strings arrives as a list: items may hold commas, quotes and spaces.
  EXPECT_EQ(std::get<std::vector<std::string>>(params["separator_strings"]),
            (std::vector<std::string>{"amen", "selah"}));
}

TEST(Config, BadTomlIsAnErrorNamingTheKey) {
  auto m = toml_error(Program::Eval, "[eval]\nnum_sample = 3\n");
  EXPECT_NE(m.find("unknown key 'num_sample' in [eval]"), std::string::npos) << m;
  EXPECT_NE(m.find("num_samples"), std::string::npos) << m;  // suggested and listed
  EXPECT_NE(m.find("test.toml:2"), std::string::npos) << m;   // file and line

  m = toml_error(Program::Eval, "[eval]\nnum_samples = \"3\"\n");
  EXPECT_NE(m.find("[eval] num_samples: expected an integer"), std::string::npos) << m;
  EXPECT_NE(m.find("got a string"), std::string::npos) << m;

  m = toml_error(Program::Eval, "[eval]\nnum_samples = 0\n");
  EXPECT_NE(m.find(">= 1"), std::string::npos) << m;

  m = toml_error(Program::Bench, "[bench]\nseq_lengths = [256, \"512\"]\n");
  EXPECT_NE(m.find("[bench] seq_lengths"), std::string::npos) << m;

  m = toml_error(Program::Eval, "[policy]\npositions = \"absolute\"\n");
  EXPECT_NE(m.find("shift, original"), std::string::npos) << m;

  m = toml_error(Program::Eval, "[evaluation]\nnum_samples = 3\n");
  EXPECT_NE(m.find("unknown table [evaluation]"), std::string::npos) << m;

  m = toml_error(Program::Eval, "mode = \"h2o\"\n");
  EXPECT_NE(m.find("outside any table"), std::string::npos) << m;

  m = toml_error(Program::Eval, "[eval\nnum_samples = 3\n");
  EXPECT_NE(m.find("invalid TOML"), std::string::npos) << m;
  EXPECT_NE(m.find("test.toml:1"), std::string::npos) << m;

  // [policy.<mode>] holds parameters; a table inside it does not.
  m = toml_error(Program::Eval, "[policy]\nh2o = { a = { b = 1 } }\n");
  EXPECT_NE(m.find("[policy.h2o] a"), std::string::npos) << m;

  Options o = make_options(Program::Eval);
  auto missing = usage_error(o, split("--config /nonexistent/kvc.toml"));
  EXPECT_NE(missing.find("/nonexistent/kvc.toml"), std::string::npos) << missing;
}

// Every config committed under configs/ loads in both programs.
TEST(Config, RepositoryConfigsLoad) {
  int count = 0;
  for (const auto& entry : fs::recursive_directory_iterator(fs::path(KVC_SOURCE_DIR) / "configs")) {
    if (entry.path().extension() != ".toml" || entry.path().filename() == "kjv_split.toml") {
      continue;
    }
    for (Program p : {Program::Eval, Program::Bench}) {
      Options o = make_options(p);
      EXPECT_NO_THROW(o.load_toml_file(entry.path().string())) << entry.path();
    }
    ++count;
  }
  EXPECT_GE(count, 11);
  Options o = make_options(Program::Eval);
  o.load_toml_file(std::string(KVC_SOURCE_DIR) + "/configs/pythia-2.8b/ppl_h2o.toml");
  EXPECT_EQ(o.get_string("policy", "name"), "h2o");
  EXPECT_EQ(o.get_int("policy", "recent_size"), 128);
  EXPECT_EQ(o.get_string("model", "path"), "pythia-2.8b-local");
  EXPECT_EQ(o.get_string("eval", "data_dir"), "dataset/pg19");
}

// ---- helpers --------------------------------------------------------------------------------

TEST(Files, Utf8Validation) {
  EXPECT_FALSE(first_invalid_utf8("plain ascii").has_value());
  EXPECT_FALSE(first_invalid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80").has_value());
  EXPECT_EQ(first_invalid_utf8("ab\xFF"), 2u);
  EXPECT_EQ(first_invalid_utf8("a\xC0\xAF"), 1u);          // overlong
  EXPECT_EQ(first_invalid_utf8("\xED\xA0\x80"), 0u);       // surrogate
  EXPECT_EQ(first_invalid_utf8("x\xE2\x82"), 1u);          // truncated
  EXPECT_EQ(first_invalid_utf8("\xF4\x90\x80\x80"), 0u);   // beyond U+10FFFF
  EXPECT_EQ(first_invalid_utf8("ok\x80"), 2u);             // stray continuation
}

TEST(Files, TextDiscoveryAndAtomicWrite) {
  TempDir dir;
  EXPECT_THROW(list_text_files(dir.path() / "missing"), RunError);
  try {
    list_text_files(dir.path());
    FAIL() << "an empty folder must be an error";
  } catch (const RunError& e) {
    EXPECT_NE(std::string(e.what()).find("no .txt files"), std::string::npos);
  }
  dir.write("b.txt", "b");
  dir.write("a.txt", "a");
  dir.write("notes.md", "x");
  auto files = list_text_files(dir.path());
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].filename(), "a.txt");
  write_file_atomic(dir.path() / "out" / "r.json", "{}\n");
  EXPECT_EQ(read_file(dir.path() / "out" / "r.json"), "{}\n");
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path() / "out")) ++entries;
  EXPECT_EQ(entries, 1);  // no temporary file left behind
}

TEST(Report, MarkdownTable) {
  std::string md = markdown_table({"Method", "PPL"}, {{"streaming", "9.58"}, {"h2o", "9.53"}});
  EXPECT_EQ(md,
            "| Method    | PPL  |\n"
            "|-----------|------|\n"
            "| streaming | 9.58 |\n"
            "| h2o       | 9.53 |\n");
}

TEST(Files, DefaultResourcesAreFoundAndAMissingOneListsEveryPlace) {
  TempDir dir;
  const char* old_xdg = std::getenv("XDG_DATA_HOME");
  const std::string saved = old_xdg ? old_xdg : "";
  setenv("XDG_DATA_HOME", (dir.path() / "xdg").c_str(), 1);
  fs::create_directories(dir.path() / "xdg/kvc/models/tiny");
  dir.write("xdg/kvc/models/tiny/config.json", "{}");
  EXPECT_EQ(resolve_resource("models/tiny", "the model"), dir.path() / "xdg/kvc/models/tiny");
  EXPECT_EQ(resolve_resource("/abs/path", "the model"), fs::path("/abs/path"));
  try {
    resolve_resource("models/none", "the embedded model", "Install it.");
    FAIL() << "a missing default must be an error";
  } catch (const RunError& e) {
    const std::string what = e.what();
    for (const std::string& part :
         {std::string("the embedded model 'models/none' not found"),
          std::string("models/none (working directory)"),
          (dir.path() / "xdg/kvc/models/none").string(), std::string("Install it.")}) {
      EXPECT_NE(what.find(part), std::string::npos) << part << " not in: " << what;
    }
    // Run from the build folder, so the source tree is one of the places.
    EXPECT_NE(what.find(KVC_SOURCE_DIR), std::string::npos) << what;
  }
  if (old_xdg) {
    setenv("XDG_DATA_HOME", saved.c_str(), 1);
  } else {
    unsetenv("XDG_DATA_HOME");
  }
}
