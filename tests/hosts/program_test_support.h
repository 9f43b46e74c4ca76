// Running kvc-eval and kvc-bench as programs in a scratch folder: the shared part of the host
// program tests.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace kvc_test {

namespace fs = std::filesystem;
using nlohmann::json;

struct Result {
  int rc = -1;
  std::string out;
  std::string err;
};

inline std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Starts `exe args...` in `cwd` with extra environment variables, its stdout and stderr going
// to cwd/.stdout and cwd/.stderr; returns the child's pid.
inline pid_t start(const std::string& exe, const std::vector<std::string>& args,
                   const fs::path& cwd,
                   const std::vector<std::pair<std::string, std::string>>& env = {}) {
  const fs::path out_path = cwd / ".stdout";
  const fs::path err_path = cwd / ".stderr";
  pid_t pid = fork();
  if (pid == 0) {
    if (chdir(cwd.c_str()) != 0) _exit(126);
    int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(out, 1);
    dup2(err, 2);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(exe.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(exe.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

// Waits for a child of start(); its exit status (128 + n when a signal n ended it) and output.
inline Result finish(pid_t pid, const fs::path& cwd) {
  int status = 0;
  waitpid(pid, &status, 0);
  Result r;
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                                                                       : -1;
  r.out = slurp(cwd / ".stdout");
  r.err = slurp(cwd / ".stderr");
  fs::remove(cwd / ".stdout");
  fs::remove(cwd / ".stderr");
  return r;
}

// Runs `exe args...` in `cwd` with extra environment variables; captures stdout and stderr.
inline Result run(const std::string& exe, const std::vector<std::string>& args,
                  const fs::path& cwd,
                  const std::vector<std::pair<std::string, std::string>>& env = {}) {
  return finish(start(exe, args, cwd, env), cwd);
}

inline bool has_kjv_mini() {
  return fs::exists(fs::path(KVC_SOURCE_DIR) / "models/kjv-mini/config.json") &&
         fs::exists(fs::path(KVC_SOURCE_DIR) / "models/kjv-mini/tokenizer.json");
}

// Flags selecting the text model (and its tokenizer when it is not in the folder).
inline std::vector<std::string> text_model_flags() {
  if (has_kjv_mini()) {
    return {"--model_name_or_path", std::string(KVC_SOURCE_DIR) + "/models/kjv-mini"};
  }
  return {"--model_name_or_path", "synthetic:pythia-70m", "--tokenizer",
          std::string(KVC_SHARED_DATA_DIR) + "/gpt-neox-20b-tokenizer.json"};
}

inline std::vector<std::string> concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

inline const char* kText1 =
    "In the beginning God created the heaven and the earth. And the earth was without form, and "
    "void; and darkness was upon the face of the deep. And the Spirit of God moved upon the face "
    "of the waters. And God said, Let there be light: and there was light.\n";
inline const char* kText2 =
    "And God saw the light, that it was good: and God divided the light from the darkness. And "
    "God called the light Day, and the darkness he called Night.\n";

class Programs : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kvc-hosts-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    write("data/a.txt", kText1);
    write("data/b.txt", kText2);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  void write(const std::string& name, const std::string& content) {
    fs::create_directories((dir_ / name).parent_path());
    std::ofstream(dir_ / name, std::ios::binary) << content;
  }
  Result eval(const std::vector<std::string>& args,
              const std::vector<std::pair<std::string, std::string>>& env = {}) {
    return run(KVC_EVAL_EXE, concat({"--policy_path", KVC_BUILD_POLICY_DIR, "--threads", "1"},
                                    args),
               dir_, env);
  }
  Result bench(const std::vector<std::string>& args,
               const std::vector<std::pair<std::string, std::string>>& env = {}) {
    return run(KVC_BENCH_EXE, concat({"--policy_path", KVC_BUILD_POLICY_DIR, "--threads", "1"},
                                     args),
               dir_, env);
  }
  // kvc-eval / kvc-bench started without waiting (to signal them); finish() waits.
  pid_t start_eval(const std::vector<std::string>& args) {
    return start(KVC_EVAL_EXE, concat({"--policy_path", KVC_BUILD_POLICY_DIR, "--threads", "1"},
                                      args),
                 dir_);
  }
  pid_t start_bench(const std::vector<std::string>& args) {
    return start(KVC_BENCH_EXE,
                 concat({"--policy_path", KVC_BUILD_POLICY_DIR, "--threads", "1"}, args), dir_);
  }
  Result finish(pid_t pid) { return kvc_test::finish(pid, dir_); }
  // Waits until the program's stderr holds `text` (true) or `seconds` pass (false).
  bool wait_for_stderr(const std::string& text, double seconds) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < end) {
      if (slurp(dir_ / ".stderr").find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  json read_json(const std::string& name) { return json::parse(slurp(dir_ / name)); }
  // Files under `sub` (recursively), for "no output was left" checks.
  int count_files(const std::string& sub) {
    if (!fs::exists(dir_ / sub)) return 0;
    int n = 0;
    for (const auto& e : fs::recursive_directory_iterator(dir_ / sub)) n += e.is_regular_file();
    return n;
  }
  fs::path dir_;
};

}  // namespace kvc_test
