#include "schema.h"

namespace kvc::hosts {

const std::vector<std::string>& seed_policy_keys() {
  static const std::vector<std::string> keys = {"start_size",    "recent_size",
                                                "heavy_size",    "update_interval",
                                                "separator_size", "local_size",
                                                "cache_size",    "scope"};
  return keys;
}

Options make_options(Program program) {
  const bool eval = program == Program::Eval;
  const bool bench = program == Program::Bench;
  const bool generate = program == Program::Generate;
  Options o(eval ? "kvc-eval" : bench ? "kvc-bench" : "kvc-generate",
            {"model", "policy", "eval", "bench", "generate"});
  auto add = [&](std::string section, std::string key, std::string flag, Kind kind, Value value,
                 std::string help) -> Option& {
    Option option;
    option.section = std::move(section);
    option.key = std::move(key);
    option.flag = std::move(flag);
    option.kind = kind;
    option.value = std::move(value);
    option.help = std::move(help);
    return o.add(std::move(option));
  };
  auto nonneg = [](Option& opt) { opt.min = 0; };
  auto positive = [](Option& opt) { opt.min = 1; };

  // ---- [policy] -------------------------------------------------------------------------------
  add("policy", "name", "mode", Kind::String, std::string("baseline"),
      "KV-cache method: an installed policy or mode (baseline, streaming, h2o, lazy_h2o, "
      "sepllm, unified, lazy_unified, and every other policy --list_policies shows), a path to "
      "a policy .so, or 'all'");
  nonneg(add("policy", "start_size", "start_size", Kind::Int, int64_t{4},
             "sink tokens kept at the start"));
  nonneg(add("policy", "recent_size", "recent_size", Kind::Int, int64_t{252},
             "most recent tokens kept"));
  nonneg(add("policy", "heavy_size", "heavy_size", Kind::Int, int64_t{128},
             "heavy-hitter tokens kept (h2o, lazy_h2o, unified)"));
  positive(add("policy", "update_interval", "update_interval", Kind::Int, int64_t{10},
               "steps between heavy-hitter refreshes (lazy_h2o)"));
  nonneg(add("policy", "separator_size", "separator_size", Kind::Int, int64_t{64},
             "separator tokens kept (sepllm, unified)"));
  nonneg(add("policy", "local_size", "local_size", Kind::Int, int64_t{256},
             "local window (sepllm, unified)"));
  {
    auto& opt = add("policy", "cache_size", "cache_size", Kind::Int, std::monostate{},
                    "cache size that triggers a SepLLM burst eviction (policy default if None)");
    opt.min = 1;
    opt.nullable = true;
  }
  add("policy", "scope", "scope", Kind::String, std::monostate{},
      "score scope for h2o-like policies: per_head or shared (policy default if None)");
  {
    auto& opt = add("policy", "positions", "positions", Kind::Choice, std::string("shift"),
                    "rotary positions after eviction: rank in the cache (shift) or position in "
                    "the text (original)");
    opt.choices = {"shift", "original"};
  }
  add("policy", "search_path", "policy_path", Kind::String, std::monostate{},
      "extra ':'-separated folders searched for policy plugins");
  add("policy", "param", "param", Kind::ParamList, std::monostate{},
      "any other policy parameter (repeatable), e.g. --param score_layers=0");

  // ---- [model] --------------------------------------------------------------------------------
  add("model", "path", "model_name_or_path", Kind::String, std::string(kDefaultModel),
      "model folder (config.json + safetensors) or synthetic:pythia-70m ...");
  add("model", "tokenizer", eval ? "tokenizer" : "", Kind::String, std::monostate{},
      "tokenizer.json to use instead of the model folder's");
  {
    auto& opt = add("model", "backend", "backend", Kind::Choice, std::string("auto"),
                    "compute backend");
    opt.choices = {"auto", "cpu", "cuda"};
  }
  {
    auto& opt = add("model", "dtype", "dtype", Kind::Choice, std::string("auto"),
                    "weight type (auto: f32 on the CPU, f16 on CUDA)");
    opt.choices = {"auto", "f32", "bf16", "f16"};
  }
  nonneg(add("model", "threads", "threads", Kind::Int, int64_t{0},
             "CPU threads (0 = one per core)"));
  nonneg(add("model", "seed", eval ? "seed" : "", Kind::Int, int64_t{0},
             "seed of the weights of synthetic: models"));

  // ---- [eval] ---------------------------------------------------------------------------------
  auto flag_if = [&](bool on, const char* name) { return on ? std::string(name) : std::string(); };
  add("eval", "data_dir", flag_if(eval, "data_dir"), Kind::String, std::string(kDefaultDataDir),
      "folder of .txt files (sorted by name)");
  positive(add("eval", "num_samples", flag_if(eval, "num_samples"), Kind::Int, int64_t{10},
               "number of text files to evaluate"));
  {
    auto& opt = add("eval", "num_eval_tokens", flag_if(eval, "num_eval_tokens"), Kind::Int,
                    std::monostate{}, "cap on scored tokens over all files (None = all)");
    opt.min = 1;
    opt.nullable = true;
  }
  add("eval", "output_dir", flag_if(eval, "output_dir"), Kind::String,
      std::string("outputs/ppl_pg19"), "folder for the JSON results");
  {
    auto& opt = add("eval", "baseline", flag_if(eval, "baseline"), Kind::Choice,
                    std::string("chunked"),
                    "baseline protocol: chunked (seed), dense (full cache, streamed) or sliding "
                    "(window recomputed for every token; slow)");
    opt.choices = {"chunked", "dense", "sliding"};
  }
  {
    auto& opt = add("eval", "chunk_size", flag_if(eval, "chunk_size"), Kind::Int, int64_t{512},
                    "chunk length of the chunked baseline");
    opt.min = 2;
  }
  {
    auto& opt = add("eval", "window", flag_if(eval, "window"), Kind::Int, std::monostate{},
                    "context of the sliding baseline (None = start_size + recent_size)");
    opt.min = 1;
    opt.nullable = true;
  }
  positive(add("eval", "stride", flag_if(eval, "stride"), Kind::Int, int64_t{1},
               "tokens scored per recomputation of the sliding baseline"));
  add("eval", "continuous_cache", flag_if(eval, "continuous_cache"), Kind::Bool, false,
      "keep one cache across files instead of resetting per file");
  {
    auto& opt = add("eval", "block_size", flag_if(eval, "block_size"), Kind::Int, int64_t{0},
                    "tokens per forward pass when streaming (exact block scoring; 1 = one "
                    "token per pass, 0 = the library's default)");
    opt.min = 0;
    opt.max = 256;
  }

  // Results beyond the PPL (docs/hosts.md, "Output files").
  add("eval", "save_nll", flag_if(eval, "save_nll"), Kind::Bool, false,
      "write every scored token (file, position, token, NLL, cache, evicted) to "
      "nll_<mode>.tsv");
  nonneg(add("eval", "trace_cache", flag_if(eval, "trace_cache"), Kind::Int, int64_t{0},
             "every N tokens, write the kept positions and scores of every (layer, head) to "
             "cache_trace_<mode>.jsonl and plot them (0 = off)"));
  add("eval", "trace_heads", flag_if(eval, "trace_heads"), Kind::String, std::string("0:0,-1:0"),
      "heads the cache-trace figure shows, LAYER:HEAD,... (negative layers count from the end)");
  {
    auto& opt = add("eval", "compare_to", flag_if(eval, "compare_to"), Kind::Choice,
                    std::string("none"),
                    "run a full-cache session in lockstep and report the KL divergence and top-1 "
                    "agreement of each policy against it");
    opt.choices = {"none", "dense"};
  }
  {
    auto& opt = add("eval", "budgets", flag_if(eval, "budgets"), Kind::IntList,
                    std::vector<int64_t>{},
                    "cache budgets (entries per layer and head) to sweep: each policy's sizes are "
                    "scaled to each (docs/hosts.md)");
    opt.min = 1;
  }
  add("eval", "figures", flag_if(eval, "figures"), Kind::Bool, true,
      "draw the figures (SVG and PNG, with gnuplot)");
  nonneg(add("eval", "loss_window", flag_if(eval, "loss_window"), Kind::Int, int64_t{0},
             "positions averaged per point of the loss-against-position figure (0 = about "
             "1/40 of the longest text)"));

  // Retrieval tasks (docs/hosts.md, "Retrieval tasks").
  {
    auto& opt = add("eval", "task", flag_if(eval, "task"), Kind::Choice, std::string("ppl"),
                    "what to measure: perplexity, or the passkey, needle or copy task");
    opt.choices = {"ppl", "passkey", "needle", "copy"};
  }
  nonneg(add("eval", "task_lengths", flag_if(eval, "task_lengths"), Kind::IntList,
               std::vector<int64_t>{128, 256, 384, 512},
               "prompt lengths in tokens of passkey and needle; copy: the gaps"));
  {
    auto& opt = add("eval", "task_depths", flag_if(eval, "task_depths"), Kind::IntList,
                    std::vector<int64_t>{0, 25, 50, 75, 100},
                    "depths of the key in the prompt, in percent (passkey, needle)");
    opt.min = 0;
    opt.max = 100;
  }
  positive(add("eval", "task_samples", flag_if(eval, "task_samples"), Kind::Int, int64_t{5},
               "instances per cell (length x depth)"));
  nonneg(add("eval", "task_seed", flag_if(eval, "task_seed"), Kind::Int, int64_t{0},
             "seed of the task instances"));
  {
    auto& opt = add("eval", "needle", flag_if(eval, "needle"), Kind::Choice,
                    std::string("single"), "needle variant (RULER): one key, several keys, or "
                                           "several values");
    opt.choices = {"single", "multikey", "multivalue"};
  }
  {
    auto& opt = add("eval", "filler", flag_if(eval, "filler"), Kind::Choice,
                    std::string("repeat"),
                    "haystack: the repeated passkey sentences, or the text of --data_dir");
    opt.choices = {"repeat", "text"};
  }
  positive(add("eval", "copy_span", flag_if(eval, "copy_span"), Kind::Int, int64_t{16},
               "tokens of the span the copy task repeats"));

  // Scale-out (docs/scale-out.md): parts of the work, and their merge.
  add("eval", "shard", flag_if(eval, "shard"), Kind::String, std::monostate{},
      "run part I of N (I from 0) of the work items (mode x file), balanced by size, and "
      "write shard results for --merge");
  add("eval", "merge", flag_if(eval, "merge"), Kind::PathList, std::vector<std::string>{},
      "combine the shard results in these folders into the results of a single run");
  add("eval", "list_items", flag_if(eval, "list_items"), Kind::Bool, false,
      "print the work items (mode x file) as JSON and exit");
  add("eval", "worker", flag_if(eval, "worker"), Kind::Bool, false,
      "load once, then run each shard I/N read from stdin (one per line), printing 'done I/N'");

  // ---- [bench] --------------------------------------------------------------------------------
  positive(add("bench", "seq_lengths", flag_if(bench, "seq_lengths"), Kind::IntList,
               std::vector<int64_t>{256, 512, 1024, 2048}, "sequence lengths to test"));
  positive(add("bench", "num_decode_tokens", flag_if(bench, "num_decode_tokens"), Kind::Int,
               int64_t{128}, "timed decode steps per sequence length"));
  add("bench", "output_dir", flag_if(bench, "output_dir"), Kind::String,
      std::string("outputs/speed_benchmark"), "folder for the JSON results and plot");
  nonneg(add("bench", "warmup", flag_if(bench, "warmup"), Kind::Int, int64_t{1},
             "untimed runs before the timed ones, per sequence length"));
  positive(add("bench", "repetitions", flag_if(bench, "repetitions"), Kind::Int, int64_t{3},
               "timed runs per sequence length (median reported with the mean)"));
  nonneg(add("bench", "seed", flag_if(bench, "seed"), Kind::Int, int64_t{42},
             "seed of the random token ids (and of synthetic: weights)"));
  {
    auto& opt = add("bench", "prefill_logits", flag_if(bench, "prefill_logits"), Kind::Choice,
                    std::string("none"),
                    "logits the timed prefill computes: none, last (the last token's, as a "
                    "generation would), or all (every token's, as scoring does)");
    opt.choices = {"none", "last", "all"};
  }

  // ---- [generate] (kvc-generate; the sampler's ranges are checked by the library) ----------
  add("generate", "prompt", flag_if(generate, "prompt"), Kind::String, std::monostate{},
      "the prompt text (else --prompt_file, else standard input)");
  add("generate", "prompt_file", flag_if(generate, "prompt_file"), Kind::String,
      std::monostate{}, "file holding the prompt (UTF-8)");
  nonneg(add("generate", "max_tokens", flag_if(generate, "max_tokens"), Kind::Int,
             int64_t{128}, "tokens to generate at most"));
  add("generate", "temperature", flag_if(generate, "temperature"), Kind::Float, 1.0,
      "sampling temperature, >= 0 (0 = greedy)");
  nonneg(add("generate", "top_k", flag_if(generate, "top_k"), Kind::Int, int64_t{0},
             "keep the k most likely tokens (0 = off)"));
  add("generate", "top_p", flag_if(generate, "top_p"), Kind::Float, 1.0,
      "nucleus sampling: keep the most likely tokens up to this mass, in (0, 1] (1 = off)");
  add("generate", "min_p", flag_if(generate, "min_p"), Kind::Float, 0.0,
      "keep tokens at least this fraction as likely as the most likely one, in [0, 1] "
      "(0 = off)");
  add("generate", "repetition_penalty", flag_if(generate, "repetition_penalty"), Kind::Float,
      1.0, "CTRL repetition penalty, > 0 (1 = off)");
  {
    auto& opt = add("generate", "repetition_last_n", flag_if(generate, "repetition_last_n"),
                    Kind::Int, int64_t{64},
                    "tokens of history the penalty looks at (-1 = all, 0 = none)");
    opt.min = -1;
  }
  nonneg(add("generate", "seed", flag_if(generate, "seed"), Kind::Int, int64_t{0},
             "seed of the sampler's random stream (SplitMix64)"));
  add("generate", "stop", flag_if(generate, "stop"), Kind::String, std::monostate{},
      "stop sequences, separated by '|' (escapes: \\n \\t \\r \\\\ \\|)");
  {
    auto& opt = add("generate", "prefill", flag_if(generate, "prefill"), Kind::Choice,
                    std::string("batch"),
                    "how the prompt is read: batch (one forward pass, the policy applied once "
                    "after it) or stream (token by token as the policy sees it, evicting while "
                    "it reads)");
    opt.choices = {"batch", "stream"};
  }
  add("generate", "ignore_eos", flag_if(generate, "ignore_eos"), Kind::Bool, false,
      "go on past <|endoftext|> (by default it ends the text)");
  add("generate", "json", flag_if(generate, "json"), Kind::String, std::monostate{},
      "write a JSON record of the run to this file");
  return o;
}

}  // namespace kvc::hosts
