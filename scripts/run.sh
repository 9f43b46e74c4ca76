#!/usr/bin/env bash
# The main job: builds kvc (Release) and compares every installed eviction policy by perplexity
# on the embedded model and the held-out KJV books (configs/default.toml). Extra arguments go
# to kvc-eval, e.g. scripts/run.sh --num_eval_tokens 2000.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d data/kjv/eval ]; then
  scripts/prepare_kjv.sh data/kjv
fi
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target kvc-eval kvc_policies
exec build/release/bin/kvc-eval --config configs/default.toml --mode all "$@"
