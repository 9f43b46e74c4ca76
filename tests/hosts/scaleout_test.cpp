// kvc-eval --shard / --merge / --list_items / --worker (docs/scale-out.md): merged shards equal
// the single run exactly, and the merge refuses missing, duplicated and mismatched shards.
#include <map>

#include "program_test_support.h"

namespace {

using namespace kvc_test;

// A result file without what legitimately differs between a single run and a merge: timing,
// where the output went, and the list of merged files.
json comparable(json j) {
  for (const char* key : {"tokens_per_sec", "wall_time_s", "merged_from"}) j.erase(key);
  j["settings"]["eval"].erase("output_dir");
  return j;
}

class ScaleOut : public Programs {
 protected:
  void SetUp() override {
    Programs::SetUp();
    write("data/c.txt", std::string(kText2) + kText1);
  }
  std::vector<std::string> work(const std::vector<std::string>& extra) {
    return concat(concat(text_model_flags(), {"--mode", "all", "--data_dir", "data",
                                              "--figures=false", "--num_eval_tokens", "150",
                                              "--start_size", "2", "--recent_size", "6",
                                              "--heavy_size", "4", "--separator_size", "2",
                                              "--local_size", "6", "--cache_size", "20"}),
                  extra);
  }
};

TEST_F(ScaleOut, MergedShardsEqualTheSingleRun) {
  auto single = eval(work({"--output_dir", "single"}));
  ASSERT_EQ(single.rc, 0) << single.err;
  std::vector<std::string> result_files;
  for (const auto& e : fs::directory_iterator(dir_ / "single"))
    if (e.path().extension() == ".json") result_files.push_back(e.path().filename().string());
  ASSERT_GE(result_files.size(), 7u);

  for (int n : {1, 2, 3}) {
    std::vector<std::string> merge_args = {"--merge"};
    for (int i = 0; i < n; ++i) {
      const std::string out = "n" + std::to_string(n) + "/s" + std::to_string(i);
      auto r = eval(work({"--shard", std::to_string(i) + "/" + std::to_string(n),
                          "--output_dir", out}));
      ASSERT_EQ(r.rc, 0) << r.err;
      merge_args.push_back(out);
    }
    const std::string merged = "n" + std::to_string(n) + "/merged";
    auto m = eval(concat(merge_args, {"--output_dir", merged, "--figures=false"}));
    ASSERT_EQ(m.rc, 0) << m.err;
    for (const auto& name : result_files) {
      if (name.rfind("ppl_results_", 0) != 0) continue;
      const json a = read_json("single/" + name), b = read_json(merged + "/" + name);
      // The NLL sums are the same bits: the same files in the same blocks, summed in the same
      // order; the PPL is computed from them.
      double sum_a = 0, sum_b = 0;
      for (const auto& f : a.at("files")) sum_a += f.at("nll_sum").get<double>();
      for (const auto& f : b.at("files")) sum_b += f.at("nll_sum").get<double>();
      EXPECT_EQ(sum_a, sum_b) << name << " n=" << n;
      EXPECT_NEAR(a.at("ppl").get<double>(), b.at("ppl").get<double>(),
                  1e-12 * a.at("ppl").get<double>())
          << name;
      EXPECT_EQ(comparable(a), comparable(b)) << name << " n=" << n;
    }
    EXPECT_EQ(slurp(dir_ / "single/ppl_results_table.md").substr(0, 60),
              slurp(dir_ / merged / "ppl_results_table.md").substr(0, 60));
  }
}

TEST_F(ScaleOut, ItemsAreSplitDeterministicallyAndBalanced) {
  auto r = eval(work({"--list_items", "--shard", "0/2"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  const json items = json::parse(r.out);
  ASSERT_GT(items.at("count").get<int>(), 0);
  ASSERT_EQ(items.at("items").size(), items.at("count").get<size_t>());
  std::map<int, int64_t> load;
  int64_t largest = 0;
  for (const auto& item : items.at("items")) {
    load[item.at("shard").get<int>()] += item.at("tokens").get<int64_t>();
    largest = std::max(largest, item.at("tokens").get<int64_t>());
    EXPECT_TRUE(item.at("file").is_string());  // one item per (mode, file) without a shared cache
  }
  ASSERT_EQ(load.size(), 2u);
  // Largest first to the lightest shard: the loads differ by at most the largest item.
  EXPECT_LE(std::abs(load[0] - load[1]), largest);
  auto again = eval(work({"--list_items", "--shard", "1/2"}));
  EXPECT_EQ(json::parse(again.out).at("items"), items.at("items"));
  // One continuous cache per run: one item per run.
  auto continuous = eval(work({"--list_items", "--continuous_cache"}));
  const json continuous_items = json::parse(continuous.out);  // outlives the loop below
  for (const auto& item : continuous_items.at("items"))
    if (item.at("run") == "streaming") EXPECT_TRUE(item.at("file").is_null());
}

TEST_F(ScaleOut, WorkerServesShardsFromStdin) {
  write("in.txt", "0/2\n1/2\n");
  // The worker reads its shards from stdin: run it through a shell redirect.
  const std::string command = std::string(KVC_EVAL_EXE) + " --policy_path " +
                              KVC_BUILD_POLICY_DIR + " --threads 1 --worker --output_dir w ";
  std::string args;
  for (const auto& a : work({})) args += "'" + a + "' ";
  auto r = run("/bin/sh", {"-c", command + args + "< in.txt"}, dir_);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("done 0/2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("done 1/2"), std::string::npos) << r.out;
  auto m = eval({"--merge", "w", "--output_dir", "merged", "--figures=false"});
  ASSERT_EQ(m.rc, 0) << m.err;
  auto single = eval(work({"--output_dir", "single"}));
  ASSERT_EQ(single.rc, 0) << single.err;
  EXPECT_EQ(comparable(read_json("single/ppl_results_h2o.json")),
            comparable(read_json("merged/ppl_results_h2o.json")));
}

TEST_F(ScaleOut, MergeRefusesMissingDuplicateAndMismatchedShards) {
  for (int i = 0; i < 2; ++i) {
    auto r = eval(work({"--shard", std::to_string(i) + "/2", "--output_dir",
                        "s" + std::to_string(i)}));
    ASSERT_EQ(r.rc, 0) << r.err;
  }
  auto missing = eval({"--merge", "s0", "--output_dir", "m1"});
  EXPECT_EQ(missing.rc, 1);
  EXPECT_NE(missing.err.find("shard 1/2 missing"), std::string::npos) << missing.err;
  EXPECT_FALSE(fs::exists(dir_ / "m1"));

  fs::create_directories(dir_ / "copy");
  fs::copy(dir_ / "s0", dir_ / "copy", fs::copy_options::recursive);
  auto duplicate = eval({"--merge", "s0", "s1", "copy", "--output_dir", "m2"});
  EXPECT_EQ(duplicate.rc, 1);
  EXPECT_NE(duplicate.err.find("shard 0/2 is given twice"), std::string::npos) << duplicate.err;
  EXPECT_NE(duplicate.err.find("copy/shard-0-of-2.json"), std::string::npos) << duplicate.err;

  // A shard made with other settings is not part of the same evaluation.
  auto different = eval(concat(concat(text_model_flags(),
                                      {"--mode", "all", "--data_dir", "data", "--figures=false",
                                       "--num_eval_tokens", "150", "--start_size", "2",
                                       "--recent_size", "7", "--heavy_size", "4",
                                       "--separator_size", "2", "--local_size", "6",
                                       "--cache_size", "20"}),
                               {"--shard", "1/2", "--output_dir", "other"}));
  ASSERT_EQ(different.rc, 0) << different.err;
  auto mismatch = eval({"--merge", "s0", "other", "--output_dir", "m3"});
  EXPECT_EQ(mismatch.rc, 1);
  EXPECT_NE(mismatch.err.find("not shards of the same evaluation"), std::string::npos)
      << mismatch.err;
  EXPECT_NE(mismatch.err.find("recent_size"), std::string::npos) << mismatch.err;

  auto three = eval(work({"--shard", "2/3", "--output_dir", "three"}));
  ASSERT_EQ(three.rc, 0) << three.err;
  auto split = eval({"--merge", "s0", "s1", "three", "--output_dir", "m4"});
  EXPECT_EQ(split.rc, 1);
  EXPECT_NE(split.err.find("not parts of the same split"), std::string::npos) << split.err;

  auto none = eval({"--merge", "data", "--output_dir", "m5"});
  EXPECT_EQ(none.rc, 1);
  EXPECT_NE(none.err.find("no shard manifest"), std::string::npos) << none.err;

  auto bad = eval(work({"--shard", "2/2", "--output_dir", "o"}));
  EXPECT_EQ(bad.rc, 2);
  EXPECT_NE(bad.err.find("--shard: '2/2' is not I/N"), std::string::npos) << bad.err;
}

}  // namespace
