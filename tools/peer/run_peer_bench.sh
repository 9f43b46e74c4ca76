#!/usr/bin/env bash
# Side-by-side CPU benchmark of kvc and llama.cpp on Pythia-shaped random weights: decode at a
# given cache depth, prefill of 512 tokens, and the read-bandwidth floor (developer-only; see
# tools/peer/README.md).
#
#   tools/peer/run_peer_bench.sh [out_dir]
#
# Both programs get the same protocol: decode DEPTH+1..DEPTH+GEN (kvc-bench --seq_lengths
# DEPTH+1 --num_decode_tokens GEN; llama-bench -d DEPTH -n GEN), REPS timed repetitions after
# one warm-up, the median reported; prefill of 512 tokens from an empty cache (kvc-bench
# --seq_lengths 513; llama-bench -p 512), kvc both without logits and with the logits of
# every token. Per round the order alternates (kvc first in odd rounds, llama.cpp first in
# even ones), so that drifts in the machine's speed hit both alike. tools/peer/summarize.py
# reports the median of the per-round ratios, with their range.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KVC_BENCH=${KVC_BENCH:-$ROOT/build-peer/bin/kvc-bench}
LLAMA_BENCH=${LLAMA_BENCH:-/work/peer-src/build-llama/bin/llama-bench}
GGUF_DIR=${GGUF_DIR:-/work/peer-src/gguf}
PYTHON=${PYTHON:-/work/venv-peer/bin/python}
ROUNDS=${ROUNDS:-3}
MODELS=${MODELS:-"pythia-160m pythia-410m pythia-1b"}
PRECS=${PRECS:-"f32 bf16"}        # kvc weight dtypes; llama.cpp gets f32, and f16 and bf16
THREADS=${THREADS:-"1 2"}
DEPTH=${DEPTH:-128}               # cache entries before the timed decode steps
GEN=${GEN:-64}                    # timed decode steps per repetition
REPS=${REPS:-3}                   # timed repetitions (after one warm-up)
PREFILL=${PREFILL:-512}           # prefill length
OUT=${1:-$ROOT/build-peer/peer-results/$(date +%Y%m%d-%H%M%S)}

mkdir -p "$OUT"
READ_BW=$ROOT/build-peer/peer/read_bw
mkdir -p "$(dirname "$READ_BW")"
cc -O3 -march=native -fopenmp "$ROOT/tools/peer/read_bw.c" -o "$READ_BW"
for m in $MODELS; do
  for d in f32 f16 bf16; do
    f=$GGUF_DIR/$m-$d.gguf
    [ -f "$f" ] || "$PYTHON" "$ROOT/tools/peer/make_gguf.py" --model "$m" --dtype "$d" --out "$f"
  done
done

{
  echo "date: $(date -Is)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "flags: $(grep -m1 -o 'avx512f\|avx512_bf16\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "nproc: $(nproc)"
  echo "kvc: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown) (working tree)"
  echo "llama.cpp: $("$LLAMA_BENCH" --version 2>&1 | head -n 2 | tr '\n' ' ')"
  echo "settings: rounds=$ROUNDS depth=$DEPTH gen=$GEN reps=$REPS prefill=$PREFILL"
} > "$OUT/meta.txt"

load() { cut -d' ' -f1 /proc/loadavg; }

# Runs a command, its output to $1 and its errors to $1.err; a failure is reported with the
# end of the errors and the run goes on (that cell of the table stays empty).
run() {
  local out=$1
  shift
  if ! "$@" > "$out" 2> "$out.err"; then
    echo "FAILED ($*):" >&2
    tail -n 5 "$out.err" | sed 's/^/    /' >&2
    rm -f "$out"
  fi
}

kvc() {  # dir model prec threads
  local dir=$1 m=$2 p=$3 t=$4
  run "$dir/kvc-$m-$p-t$t.log" "$KVC_BENCH" --model_name_or_path "synthetic:$m" --dtype "$p" \
    --threads "$t" --mode baseline --seq_lengths $((DEPTH + 1)) $((PREFILL + 1)) \
    --num_decode_tokens "$GEN" --repetitions "$REPS" --warmup 1 \
    --output_dir "$dir/kvc-$m-$p-t$t"
  run "$dir/kvc-all-$m-$p-t$t.log" "$KVC_BENCH" --model_name_or_path "synthetic:$m" \
    --dtype "$p" --threads "$t" --mode baseline --seq_lengths $((PREFILL + 1)) \
    --prefill_logits all --num_decode_tokens 1 --repetitions "$REPS" --warmup 1 \
    --output_dir "$dir/kvc-all-$m-$p-t$t"
}

llama() {  # dir model prec threads
  local dir=$1 m=$2 p=$3 t=$4 d
  local types=f32
  [ "$p" = f32 ] || types="f16 bf16"
  for d in $types; do
    run "$dir/llama-tg-$m-$d-t$t.json" "$LLAMA_BENCH" -m "$GGUF_DIR/$m-$d.gguf" -p 0 -n "$GEN" \
      -d "$DEPTH" -r "$REPS" -t "$t" -o json
    run "$dir/llama-pp-$m-$d-t$t.json" "$LLAMA_BENCH" -m "$GGUF_DIR/$m-$d.gguf" \
      -p "$PREFILL" -n 0 -r "$REPS" -t "$t" -o json
  done
}

for r in $(seq 1 "$ROUNDS"); do
  dir=$OUT/round$r
  mkdir -p "$dir"
  echo "round $r: bandwidth (load $(load))" >&2
  echo "bw $(load)" >> "$dir/load.txt"
  "$READ_BW" 1024 5 > "$dir/read_bw.txt"
  for m in $MODELS; do
    for p in $PRECS; do
      for t in $THREADS; do
        echo "round $r: $m $p threads=$t (load $(load))" >&2
        echo "$m $p $t $(load)" >> "$dir/load.txt"
        if [ $((r % 2)) = 1 ]; then
          kvc "$dir" "$m" "$p" "$t"
          llama "$dir" "$m" "$p" "$t"
        else
          llama "$dir" "$m" "$p" "$t"
          kvc "$dir" "$m" "$p" "$t"
        fi
      done
    done
  done
done
echo "end $(load)" >> "$OUT/meta.txt"
echo "results in $OUT" >&2
python3 "$ROOT/tools/peer/summarize.py" "$OUT"
