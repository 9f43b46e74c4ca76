// The bad-input corpus (cases.json): each case builds a small folder of broken files, then
// loads them through the public C ABI or runs kvc-eval / kvc-bench / kvc-generate on them, and
// requires a clean failure: a non-zero status (or exit status 1/2), a message naming the
// offending file, key or value, no file created or changed in the case folder (no partial
// output), and no sanitizer report (under the asan preset a report aborts the process, failing the case).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvc/kvc.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary);
  out << bytes;
  ASSERT_TRUE(out.good()) << p;
}

std::string substitute(std::string s, const fs::path& work) {
  const std::pair<std::string, std::string> vars[] = {{"${CASE}", work.string()},
                                                      {"${SRC}", KVC_SOURCE_DIR}};
  for (const auto& [k, v] : vars)
    for (size_t at; (at = s.find(k)) != std::string::npos;) s.replace(at, k.size(), v);
  return s;
}

// set / remove / rename / swap_values, all addressed by JSON pointers.
void edit_json(json& j, const json& spec) {
  if (spec.contains("set"))
    for (const auto& [ptr, value] : spec["set"].items()) j[json::json_pointer(ptr)] = value;
  if (spec.contains("remove"))
    for (const auto& ptr : spec["remove"]) {
      const json::json_pointer p(ptr.get<std::string>());
      j[p.parent_pointer()].erase(p.back());
    }
  if (spec.contains("rename"))
    for (const auto& [ptr, name] : spec["rename"].items()) {
      const json::json_pointer p(ptr);
      json value = j[p];
      j[p.parent_pointer()].erase(p.back());
      j[p.parent_pointer()][name.get<std::string>()] = value;
    }
  if (spec.contains("swap_values")) {
    const json::json_pointer a(spec["swap_values"][0].get<std::string>());
    const json::json_pointer b(spec["swap_values"][1].get<std::string>());
    std::swap(j[a], j[b]);
  }
}

std::string u64le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// A safetensors file derived from a real one (header edited, data kept) or written from text.
std::string make_safetensors(const json& spec) {
  std::string header, data;
  if (spec.contains("from")) {
    const std::string src = read_file(fs::path(KVC_SOURCE_DIR) / spec["from"].get<std::string>());
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(src[i]);
    json h = json::parse(src.substr(8, n));
    edit_json(h, spec);
    header = h.dump();
    data = src.substr(8 + n);
  } else {
    header = spec["header_text"].get<std::string>();
    data.assign(spec.value("data_bytes", 0), '\0');
  }
  std::string out = u64le(spec.value("length", static_cast<uint64_t>(header.size()))) + header +
                    data;
  if (spec.contains("truncate_by")) out.resize(out.size() - spec["truncate_by"].get<size_t>());
  return out;
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

void materialize(const fs::path& work, const json& files) {
  for (const auto& [rel, spec] : files.items()) {
    if (spec.is_null()) continue;  // a file deliberately left out
    const fs::path p = work / rel;
    if (spec.contains("text")) {
      write_file(p, spec["text"].get<std::string>());
    } else if (spec.contains("hex")) {
      write_file(p, from_hex(spec["hex"].get<std::string>()));
    } else if (spec.contains("safetensors")) {
      write_file(p, make_safetensors(spec["safetensors"]));
    } else if (spec.contains("copy")) {
      const std::string src = read_file(fs::path(KVC_SOURCE_DIR) / spec["copy"].get<std::string>());
      if (spec.contains("set") || spec.contains("remove") || spec.contains("rename") ||
          spec.contains("swap_values")) {
        json j = json::parse(src);
        edit_json(j, spec);
        write_file(p, j.dump(1));
      } else {
        write_file(p, src);
      }
    } else {
      FAIL() << "unknown file spec for " << rel << ": " << spec.dump();
    }
  }
}

// Every file under `dir` with its size and contents hash: what "no partial output" compares.
std::map<std::string, size_t> snapshot(const fs::path& dir) {
  std::map<std::string, size_t> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string rel = fs::relative(e.path(), dir).string();
    out[rel] = e.is_regular_file() ? std::hash<std::string>{}(read_file(e.path())) : 0;
  }
  return out;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct Outcome {
  bool api = true;
  kvc_status status = KVC_OK;
  int exit_code = 0;
  std::string message;  // kvc_last_error(), or the program's stderr
};

Outcome act(const json& action, const fs::path& work) {
  Outcome o;
  const std::string kind = action["kind"];
  if (kind == "model_load") {
    kvc_model_options opt;
    kvc_model_options_init(&opt);
    opt.backend = KVC_BACKEND_CPU;
    opt.n_threads = 1;
    kvc_model* m = nullptr;
    o.status = kvc_model_load((work / action["path"].get<std::string>()).c_str(), &opt, &m);
    o.message = kvc_last_error();
    if (m) {
      ADD_FAILURE() << "model handle returned";
      kvc_model_free(m);
    }
  } else if (kind == "tokenizer_load") {
    kvc_tokenizer* t = nullptr;
    o.status = kvc_tokenizer_load((work / action["path"].get<std::string>()).c_str(), &t);
    o.message = kvc_last_error();
    if (t) {
      ADD_FAILURE() << "tokenizer handle returned";
      kvc_tokenizer_free(t);
    }
  } else if (kind == "policy_check") {
    std::vector<std::string> text;
    for (const auto& p : action["params"]) {
      text.push_back(p[0]);
      text.push_back(p[1]);
    }
    std::vector<kvc_param> params;
    for (size_t i = 0; i < text.size(); i += 2)
      params.push_back({text[i].c_str(), text[i + 1].c_str()});
    const std::string policy = substitute(action["policy"], work);
    o.status = kvc_policy_check(policy.c_str(), KVC_BUILD_POLICY_DIR,
                                params.empty() ? nullptr : params.data(), params.size());
    o.message = kvc_last_error();
  } else if (kind == "run") {
    o.api = false;
    const std::string program = action["program"];
    std::string cmd = "cd " + shell_quote(work.string()) + " && exec " +
                      shell_quote(program == "kvc-eval"       ? KVC_EVAL_EXE
                                  : program == "kvc-generate" ? KVC_GENERATE_EXE
                                                              : KVC_BENCH_EXE);
    for (const auto& a : action["args"]) cmd += " " + shell_quote(substitute(a, work));
    const fs::path log = work.parent_path() / "stderr.txt";
    cmd += " >" + shell_quote((work.parent_path() / "stdout.txt").string()) + " 2>" +
           shell_quote(log.string()) + " </dev/null";
    const int st = std::system(cmd.c_str());
    o.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    o.message = read_file(log);
  } else {
    ADD_FAILURE() << "unknown action kind " << kind;
  }
  return o;
}

json load_manifest() {
  std::ifstream in(std::string(KVC_SOURCE_DIR) + "/tests/badinput/cases.json");
  return json::parse(in)["cases"];
}

class BadInput : public ::testing::TestWithParam<json> {};

TEST_P(BadInput, FailsCleanly) {
  const json& c = GetParam();
  SCOPED_TRACE(c["name"].get<std::string>() + ": " + c["what"].get<std::string>());
  const fs::path root = fs::temp_directory_path() /
                        ("kvc-badinput-" + std::to_string(::getpid())) /
                        c["name"].get<std::string>();
  const fs::path work = root / "work";
  fs::remove_all(root);
  fs::create_directories(work);
  materialize(work, c["files"]);
  const auto before = snapshot(work);

  const Outcome o = act(c["action"], work);
  if (std::getenv("KVC_BADINPUT_SHOW"))  // to review the messages users would see
    std::printf("%s -> %s / exit %d:\n  %s\n", c["name"].get<std::string>().c_str(),
                kvc_status_name(o.status), o.exit_code, o.message.c_str());
  const json& expect = c["expect"];
  if (o.api) {
    EXPECT_NE(o.status, KVC_OK);
    if (expect.is_object() && expect.contains("status")) {
      EXPECT_STREQ(kvc_status_name(o.status), expect["status"].get<std::string>().c_str())
          << o.message;
    }
  } else {
    // 2: bad flags or config (usage), 1: failure at run time; anything else (a signal, a
    // sanitizer's exit) is a crash.
    EXPECT_TRUE(o.exit_code == 1 || o.exit_code == 2) << "exit " << o.exit_code << "\n"
                                                      << o.message;
    if (expect.is_object() && expect.contains("exit")) {
      EXPECT_EQ(o.exit_code, expect["exit"].get<int>()) << o.message;
    }
  }
  EXPECT_FALSE(o.message.empty());
  for (const auto& m : c["message"])
    EXPECT_NE(o.message.find(m.get<std::string>()), std::string::npos)
        << "message does not name '" << m.get<std::string>() << "':\n" << o.message;
  EXPECT_EQ(o.message.find("Sanitizer"), std::string::npos) << o.message;
  EXPECT_EQ(o.message.find("runtime error:"), std::string::npos) << o.message;
  EXPECT_EQ(snapshot(work), before) << "files were created or changed in " << work;
  if (!HasFailure()) fs::remove_all(root);
}

INSTANTIATE_TEST_SUITE_P(Corpus, BadInput, ::testing::ValuesIn(load_manifest()),
                         [](const ::testing::TestParamInfo<json>& info) {
                           return info.param["name"].get<std::string>();
                         });

TEST(BadInputCorpus, CoversEveryInputKind) {
  std::map<std::string, int> kinds;
  for (const auto& c : load_manifest()) {
    const std::string name = c["name"];
    kinds[name.substr(0, name.find('_'))]++;
  }
  size_t total = 0;
  for (const auto& [k, n] : kinds) total += n;
  EXPECT_GE(total, 30u);
  for (const char* k : {"st", "cfg", "index", "tok", "param", "cli"})
    EXPECT_GT(kinds[k], 0) << "no case of kind " << k;
}

}  // namespace
