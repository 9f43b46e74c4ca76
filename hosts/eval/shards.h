// Scale-out of kvc-eval (docs/scale-out.md): the work as items, a deterministic split into
// shards (--shard I/N), the shard results, and their exact merge (--merge DIR...).
//
// A work item is one (run, file) pair: files are scored from an empty cache each, so each item
// is independent and gives the same bits wherever it runs. A run with --continuous_cache keeps
// one cache across its files and is a single item. Items are listed in plan order (the runs as
// --mode all orders them), then file-name order, and assigned to shards by size (tokens to
// score), largest first, each to the shard with the fewest tokens so far (the lowest index on
// ties): every shard computes the same assignment from the same settings and data.
//
// A shard writes, in its output folder, ppl_results_{label}.shard-I-of-N.json for each run it
// has items of (the result file of a run, over its items, plus the per-position loss sums) and,
// last, the manifest shard-I-of-N.json: the items of every shard and a fingerprint of the
// settings, model, data and engine. A shard without a manifest did not finish. --merge reads
// the manifests, refuses missing, duplicated or mismatched shards, and writes exactly the files
// of a single run: PPL from the summed NLL and token counts, in the single run's order.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "options.h"
#include "plan.h"
#include "record.h"

namespace kvc::hosts {

struct ShardSpec {
  int64_t index = 0, count = 1;
  // The suffix of its files: ".shard-I-of-N".
  std::string suffix() const;
};

// "I/N" with 0 <= I < N; UsageError naming `origin` otherwise.
ShardSpec parse_shard(const std::string& text, const std::string& origin);

struct WorkItem {
  size_t run = 0;
  int64_t file = -1;  // index into the texts; -1: every file of the run (one continuous cache)
  int64_t tokens = 0;
  int64_t shard = 0;  // of the last assign_shards
};

// The items of `plan` whose runs score counts[run][file] tokens of each file.
std::vector<WorkItem> work_items(const Plan& plan, const std::vector<std::vector<int64_t>>& counts);

// Sets WorkItem::shard for a split into `n_shards` (largest first, to the least loaded shard).
void assign_shards(std::vector<WorkItem>& items, int64_t n_shards);

// The items as JSON: [{"run": label, "file": name or null, "tokens": n, "shard": s}].
nlohmann::ordered_json items_json(const std::vector<WorkItem>& items, const Plan& plan,
                                  const Inputs& in);

// What must agree between shards: the settings that change results, the model and data hashes,
// the kvc version, backend and dtype.
nlohmann::ordered_json fingerprint(const Options& options, const Inputs& in);

// shard-I-of-N.json: written when the shard has finished.
void write_manifest(const std::filesystem::path& output_dir, const ShardSpec& shard,
                    const Options& options, const Plan& plan, const Inputs& in,
                    const std::vector<WorkItem>& items, const std::string& caption,
                    int64_t max_position_embeddings);

// --merge: combines the shards found in `dirs` into `output_dir`; returns the exit status.
int merge_shards(const std::string& program, const std::vector<std::string>& dirs,
                 const Options& options);

}  // namespace kvc::hosts
