#!/usr/bin/env bash
# The README's figures and tables on the embedded model, in one command (after scripts/run.sh,
# whose loss-against-position figure it copies): a budget sweep of every policy, and the
# passkey and needle heat maps of every method. Each part is a plain kvc-eval run on
# configs/default.toml; the outputs stay in outputs/, and the figures the README shows are
# copied (as PNG) to docs/figures/.
#
#   scripts/figures.sh            every part
#   scripts/figures.sh sweep      one part: loss | sweep | passkey | needle
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d data/kjv/eval ]; then
  scripts/prepare_kjv.sh data/kjv
fi
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target kvc-eval kvc_policies

eval_() { build/release/bin/kvc-eval --config configs/default.toml --mode all "$@"; }
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(loss sweep passkey needle)
mkdir -p docs/figures

for part in "${parts[@]}"; do
  case "$part" in
    loss)
      # Drawn by the main job (scripts/run.sh): not rerun here.
      if [ ! -f outputs/ppl_pg19/loss_vs_position.png ]; then
        echo "scripts/figures.sh: outputs/ppl_pg19/loss_vs_position.png is missing: run scripts/run.sh first" >&2
        exit 1
      fi
      cp outputs/ppl_pg19/loss_vs_position.png docs/figures/loss_vs_position.png
      ;;
    sweep)
      # PPL against cache entries per (layer, head): 4,000 scored tokens per point.
      eval_ --budgets 64 128 256 512 --num_eval_tokens 4000 --output_dir outputs/budget_sweep
      cp outputs/budget_sweep/ppl_budget_sweep.png docs/figures/ppl_budget_sweep.png
      ;;
    passkey | needle)
      # Accuracy over prompt length x depth of the key, one panel per method (depths 0..100 %,
      # 5 instances per cell; a needle prompt needs more than 128 tokens of fixed text).
      lengths=(128 256 384 512)
      [ "$part" = needle ] && lengths=(192 256 384 512)
      eval_ --task "$part" --task_lengths "${lengths[@]}" --output_dir "outputs/task_$part"
      cp "outputs/task_$part/task_$part.png" "docs/figures/task_$part.png"
      ;;
    *)
      echo "scripts/figures.sh: unknown part '$part' (expected loss, sweep, passkey or needle)" >&2
      exit 2
      ;;
  esac
done
