// A plugin built against policy ABI 1.0 (tests/policy/abi_1_0: a frozen copy of that header)
// keeps loading and running on this host, as a rule and as a callback, and selects exactly as
// the bundled h2o does with the same sizes: same per-token NLL, same entries kept.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kvc/kvc.h"

namespace {

const std::string kModel = std::string(KVC_SOURCE_DIR) + "/tests/fixtures/models/neox-peaked";

struct Scored {
  std::vector<float> nll;
  std::vector<std::vector<int64_t>> kept;  // per (layer, head)
};

Scored score(kvc_model* model, const char* policy, const char* policy_path,
          std::vector<kvc_param> params, const std::vector<int32_t>& tokens) {
  kvc_session_options so;
  kvc_session_options_init(&so);
  so.policy = policy;
  so.policy_path = policy_path;
  so.params = params.data();
  so.n_params = params.size();
  kvc_session* s = nullptr;
  EXPECT_EQ(kvc_session_create(model, &so, &s), KVC_OK) << kvc_last_error();
  Scored run;
  if (!s) return run;
  run.nll.resize(tokens.size() - 1);
  EXPECT_EQ(kvc_session_score(s, tokens.data(), tokens.size(), nullptr, run.nll.data(),
                              run.nll.size()),
            KVC_OK)
      << kvc_last_error();
  kvc_model_info info;
  kvc_model_info_init(&info);
  EXPECT_EQ(kvc_model_get_info(model, &info), KVC_OK);
  for (int32_t l = 0; l < info.n_layers; ++l)
    for (int32_t h = 0; h < info.n_heads; ++h) {
      std::vector<int64_t> pos(tokens.size());
      size_t n = 0;
      EXPECT_EQ(kvc_session_cache_entries(s, l, h, pos.data(), nullptr, pos.size(), &n), KVC_OK);
      pos.resize(n);
      run.kept.push_back(pos);
    }
  kvc_session_free(s);
  return run;
}

TEST(OldPlugin, Abi10PluginLoadsAndRunsLikeTheBundledPolicy) {
  kvc_policy_list* list = nullptr;
  ASSERT_EQ(kvc_policy_list_load(KVC_OLD_PLUGIN_DIR, &list), KVC_OK);
  bool found = false;
  for (size_t i = 0; i < kvc_policy_list_size(list); ++i)
    found |= std::string(kvc_policy_list_get(list, i)->name) == "old_h2o";
  kvc_policy_list_free(list);
  ASSERT_TRUE(found) << "old_h2o was not listed";

  kvc_model* model = nullptr;
  kvc_model_options mo;
  kvc_model_options_init(&mo);
  mo.backend = KVC_BACKEND_CPU;
  mo.weight_dtype = KVC_DTYPE_F32;
  ASSERT_EQ(kvc_model_load(kModel.c_str(), &mo, &model), KVC_OK) << kvc_last_error();
  std::vector<int32_t> tokens;
  for (int i = 0; i < 60; ++i) tokens.push_back((i * 37 + 11) % 125 + 3);
  const std::vector<kvc_param> sizes = {
      {"start_size", "2"}, {"recent_size", "6"}, {"heavy_size", "5"}};
  const Scored bundled = score(model, "h2o", KVC_BUILD_POLICY_DIR, sizes, tokens);
  for (const char* callback : {"false", "true"}) {
    auto params = sizes;
    params.push_back({"callback", callback});
    const Scored old = score(model, "old_h2o", KVC_OLD_PLUGIN_DIR, params, tokens);
    ASSERT_EQ(old.nll.size(), bundled.nll.size()) << "callback " << callback;
    for (size_t i = 0; i < old.nll.size(); ++i)
      ASSERT_EQ(old.nll[i], bundled.nll[i]) << "token " << i << ", callback " << callback;
    EXPECT_EQ(old.kept, bundled.kept) << "callback " << callback;
    EXPECT_EQ(old.kept[0].size(), 13u);
  }
  kvc_model_free(model);
}

}  // namespace
