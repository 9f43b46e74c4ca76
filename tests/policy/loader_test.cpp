// Finding, validating and listing plugins; each defect has its own test and message.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "policy_test_util.h"

namespace kvc {
namespace {

using test::bad_plugin_path;
using test::expect_error;
using test::plugin_path;

const char* const kBundled[] = {"baseline", "h2o", "lazy_h2o", "sepllm", "streaming", "unified"};

TEST(PolicyLoader, ByNameFromTheExtraPath) {
  for (const char* name : kBundled) {
    auto p = load_policy(name, KVC_BUILD_POLICY_DIR);
    EXPECT_EQ(p->name, name);
    EXPECT_EQ(p->path, std::filesystem::canonical(plugin_path(name)).string());
    EXPECT_EQ(p->desc->abi_major, KVC_POLICY_ABI_MAJOR);
  }
}

TEST(PolicyLoader, ByPathAndCachedOnce) {
  auto a = load_policy(plugin_path("h2o"), "");
  auto b = load_policy("h2o", std::string("/nonexistent:") + KVC_BUILD_POLICY_DIR);
  EXPECT_EQ(a.get(), b.get());  // one validated instance per .so
  ASSERT_EQ(a->params.size(), 7u);
  EXPECT_STREQ(a->params[0].name, "start_size");
  EXPECT_STREQ(a->params[3].choices, "per_head|shared");
}

TEST(PolicyLoader, SearchPathOrder) {
  setenv("KVC_POLICY_PATH", "/env/a::/env/b", 1);
  auto dirs = policy_search_path("/x:/y:/x");
  unsetenv("KVC_POLICY_PATH");
  ASSERT_GE(dirs.size(), 5u);
  EXPECT_EQ(dirs[0], "/x");
  EXPECT_EQ(dirs[1], "/y");
  EXPECT_EQ(dirs[2], "/env/a");
  EXPECT_EQ(dirs[3], "/env/b");
  EXPECT_EQ(dirs[4], KVC_INSTALL_POLICY_DIR);
  EXPECT_NE(dirs.back().find('/'), std::string::npos);  // the folder of this binary
}

TEST(PolicyLoader, EnvironmentPathIsSearched) {
  setenv("KVC_POLICY_PATH", KVC_BUILD_POLICY_DIR, 1);
  auto p = load_policy("streaming", "");
  unsetenv("KVC_POLICY_PATH");
  EXPECT_EQ(p->name, "streaming");
}

TEST(PolicyLoader, UnknownNameListsAvailablePolicies) {
  expect_error([] { load_policy("h20", KVC_BUILD_POLICY_DIR); }, KVC_ERR_NOT_FOUND,
               {"unknown policy 'h20'", "libkvc_policy_h20.so",
                "baseline, h2o, keydiff, knorm, lazy_h2o, pyramidkv, scissorhands, sepllm, snapkv, "
                "streaming, tova, unified", KVC_BUILD_POLICY_DIR});
}

TEST(PolicyLoader, MalformedNameAndMissingFile) {
  expect_error([] { load_policy("H2O!", ""); }, KVC_ERR_INVALID_ARGUMENT,
               {"'H2O!' is not a policy name"});
  expect_error([] { load_policy("/no/such/libkvc_policy_x.so", ""); }, KVC_ERR_NOT_FOUND,
               {"/no/such/libkvc_policy_x.so", "does not exist"});
  expect_error([] { load_policy("", ""); }, KVC_ERR_INVALID_ARGUMENT, {"empty"});
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/kvc_policy_test_XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(PolicyLoader, TextFileIsNotAPlugin) {
  TempDir dir;
  const std::string f = dir.path() + "/libkvc_policy_text.so";
  std::ofstream(f) << "not a shared object\n";
  expect_error([&] { load_policy("text", dir.path()); }, KVC_ERR_POLICY,
               {f, "is not a policy plugin", "not a shared object"});
  expect_error([&] { load_policy(f, ""); }, KVC_ERR_POLICY, {"not a shared object"});
}

TEST(PolicyLoader, TruncatedElfIsNotLoadable) {
  TempDir dir;
  const std::string f = dir.path() + "/libkvc_policy_trunc.so";
  std::ofstream(f, std::ios::binary) << "\x7f" "ELF" << std::string(60, '\0');
  expect_error([&] { load_policy(f, ""); }, KVC_ERR_POLICY, {f, "not a loadable shared object"});
}

TEST(PolicyLoader, FolderIsNotAPlugin) {
  TempDir dir;
  const std::string f = dir.path() + "/libkvc_policy_dir.so";
  std::filesystem::create_directory(f);
  expect_error([&] { load_policy(f, ""); }, KVC_ERR_POLICY, {"is a folder"});
}

TEST(PolicyLoader, MissingEntrySymbol) {
  expect_error([] { load_policy(bad_plugin_path("no_entry"), ""); }, KVC_ERR_POLICY,
               {"libkvc_policy_no_entry.so", "does not export the symbol 'kvc_policy_entry'"});
}

TEST(PolicyLoader, WrongAbiMajor) {
  expect_error([] { load_policy(bad_plugin_path("bad_abi"), ""); }, KVC_ERR_POLICY,
               {"libkvc_policy_bad_abi.so", "ABI major 99", "rebuild"});
}

TEST(PolicyLoader, NullDescriptor) {
  expect_error([] { load_policy(bad_plugin_path("null_descriptor"), ""); }, KVC_ERR_POLICY,
               {"libkvc_policy_null_descriptor.so", "returned NULL"});
}

TEST(PolicyLoader, NullFunction) {
  expect_error([] { load_policy(bad_plugin_path("no_destroy"), ""); }, KVC_ERR_POLICY,
               {"policy plugin 'no_destroy'", "destroy is NULL"});
}

TEST(PolicyLoader, NameMustMatchTheFileWhenLookedUpByName) {
  expect_error([] { load_policy("wrong_name", KVC_BAD_PLUGIN_DIR); }, KVC_ERR_POLICY,
               {"calls itself 'some_other_name'", "looked up as 'wrong_name'"});
  // By path, the file name does not matter.
  EXPECT_EQ(load_policy(bad_plugin_path("wrong_name"), "")->name, "some_other_name");
}

TEST(PolicyLoader, InvalidSchemas) {
  expect_error([] { load_policy(bad_plugin_path("schema_duplicate"), ""); }, KVC_ERR_POLICY,
               {"parameter 'size' is declared twice"});
  expect_error([] { load_policy(bad_plugin_path("schema_default"), ""); }, KVC_ERR_POLICY,
               {"parameter 'size': default = '20'", "out of range", "schema is invalid"});
  expect_error([] { load_policy(bad_plugin_path("schema_range"), ""); }, KVC_ERR_POLICY,
               {"parameter 'size' has an empty range [10, 0]"});
  expect_error([] { load_policy(bad_plugin_path("schema_choice"), ""); }, KVC_ERR_POLICY,
               {"parameter 'mode' is a choice but lists no choices"});
  expect_error([] { load_policy(bad_plugin_path("schema_type"), ""); }, KVC_ERR_POLICY,
               {"parameter 'size' has the unknown type 42"});
}

TEST(PolicyLoader, DiscoverSkipsBadPluginsAndReportsThem) {
  std::string errors;
  auto list = discover_policies(KVC_BAD_PLUGIN_DIR, &errors);
  std::vector<std::string> names;
  for (auto& p : list) names.push_back(p->name);
  // The bundled ones may also be found next to the test binary; the bad folder gives these.
  EXPECT_NE(std::find(names.begin(), names.end(), "bad_plan"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "valid_minimal"), names.end());
  EXPECT_EQ(std::find(names.begin(), names.end(), "bad_abi"), names.end());
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  for (const char* bad : {"bad_abi", "null_descriptor", "no_entry", "wrong_name",
                          "schema_duplicate", "schema_default", "schema_range",
                          "schema_choice", "schema_type", "no_destroy"})
    EXPECT_NE(errors.find(std::string("libkvc_policy_") + bad + ".so"), std::string::npos)
        << bad << " missing from:\n" << errors;
}

// ---- The C ABI ------------------------------------------------------------------------------

TEST(PolicyApi, ListsBundledPoliciesWithParameters) {
  kvc_policy_list* list = nullptr;
  ASSERT_EQ(kvc_policy_list_load(KVC_BUILD_POLICY_DIR, &list), KVC_OK) << kvc_last_error();
  std::vector<std::string> names;
  const kvc_policy_info* sepllm = nullptr;
  for (size_t i = 0; i < kvc_policy_list_size(list); ++i) {
    const kvc_policy_info* info = kvc_policy_list_get(list, i);
    names.push_back(info->name);
    if (names.back() == "sepllm") sepllm = info;
    EXPECT_NE(std::string(info->path).find("libkvc_policy_"), std::string::npos);
    EXPECT_GT(std::string(info->description).size(), 0u);
  }
  for (const char* name : kBundled)
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  EXPECT_EQ(kvc_policy_list_get(list, 1000), nullptr);
  ASSERT_NE(sepllm, nullptr);
  ASSERT_EQ(sepllm->n_params, 6u);
  EXPECT_STREQ(sepllm->params[3].name, "cache_size");
  EXPECT_STREQ(sepllm->params[3].default_value, "512");
  EXPECT_EQ(sepllm->params[4].type, KVC_PARAM_INT_LIST);
  EXPECT_STREQ(kvc_policy_list_errors(list), "");
  kvc_policy_list_free(list);
}

TEST(PolicyApi, ListReportsInvalidCandidates) {
  kvc_policy_list* list = nullptr;
  ASSERT_EQ(kvc_policy_list_load(KVC_BAD_PLUGIN_DIR, &list), KVC_OK);
  EXPECT_NE(std::string(kvc_policy_list_errors(list)).find("ABI major 99"), std::string::npos);
  kvc_policy_list_free(list);
  EXPECT_EQ(kvc_policy_list_load(nullptr, nullptr), KVC_ERR_INVALID_ARGUMENT);
}

TEST(PolicyApi, CheckAcceptsGoodAndRejectsBadParameters) {
  const kvc_param good[] = {{"cache_size", "400"}, {"local_size", "300"}};
  EXPECT_EQ(kvc_policy_check("sepllm", KVC_BUILD_POLICY_DIR, good, 2), KVC_OK) << kvc_last_error();
  EXPECT_EQ(kvc_policy_check("sepllm", KVC_BUILD_POLICY_DIR, nullptr, 0), KVC_OK);
  // separator_strings needs a tokenizer, which a check without a model does not have: accepted.
  const kvc_param strings[] = {{"separator_strings", "\".\", \"\\n\""}};
  EXPECT_EQ(kvc_policy_check("sepllm", KVC_BUILD_POLICY_DIR, strings, 1), KVC_OK)
      << kvc_last_error();
  const kvc_param bad[] = {{"cache_size", "300"}};  // 4 + 64 + 256 >= 300
  EXPECT_EQ(kvc_policy_check("sepllm", KVC_BUILD_POLICY_DIR, bad, 1), KVC_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kvc_last_error()).find("must be less than cache_size (300)"),
            std::string::npos) << kvc_last_error();
  const kvc_param unknown[] = {{"window", "3"}};
  EXPECT_EQ(kvc_policy_check("streaming", KVC_BUILD_POLICY_DIR, unknown, 1),
            KVC_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kvc_last_error()).find("start_size, recent_size"), std::string::npos);
  EXPECT_EQ(kvc_policy_check("nope", KVC_BUILD_POLICY_DIR, nullptr, 0), KVC_ERR_NOT_FOUND);
  EXPECT_EQ(kvc_policy_check(nullptr, nullptr, nullptr, 0), KVC_ERR_INVALID_ARGUMENT);
}

}  // namespace
}  // namespace kvc
