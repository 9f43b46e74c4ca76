#!/usr/bin/env bash
# Side-by-side CPU decode benchmark: kvc against llama.cpp on Pythia-shaped random weights,
# next to the read-bandwidth floor (developer-only; see tools/peer/README.md).
#
#   tools/peer/run_peer_bench.sh [out_dir]
#
# Per round: read bandwidth with 1 and 2 threads (read_bw.c and kvc's ReadBandwidth), then
# for every model x precision x threads kvc first and llama.cpp right after it (interleaved
# A/B, so that drifts in the machine's load hit both). tools/peer/summarize.py turns the JSON
# files into the table (medians over rounds).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KVC_BIN=${KVC_BIN:-$ROOT/build-peer/bin}
LLAMA_BENCH=${LLAMA_BENCH:-/work/peer-src/build-llama/bin/llama-bench}
GGUF_DIR=${GGUF_DIR:-/work/peer-src/gguf}
PYTHON=${PYTHON:-/work/venv-peer/bin/python}
ROUNDS=${ROUNDS:-3}
MODELS=${MODELS:-"pythia-160m pythia-410m pythia-1b"}
PRECS=${PRECS:-"f32 bf16"}        # kvc weight dtypes; llama.cpp gets f32 and f16 (+bf16)
LLAMA_BF16=${LLAMA_BF16:-1}       # also run llama.cpp on BF16 files (same format as kvc bf16)
THREADS=${THREADS:-"1 2"}
LLAMA_GEN=${LLAMA_GEN:-64}        # tokens per llama-bench repetition
LLAMA_DEPTH=${LLAMA_DEPTH:-128}   # cache depth; kvc's bench decodes at 32..288 (mean 160)
OUT=${1:-$ROOT/build-peer/peer-results/$(date +%Y%m%d-%H%M%S)}

mkdir -p "$OUT"
READ_BW=$ROOT/build-peer/peer/read_bw
mkdir -p "$(dirname "$READ_BW")"
cc -O3 -march=native -fopenmp "$ROOT/tools/peer/read_bw.c" -o "$READ_BW"
for m in $MODELS; do
  for d in f32 f16 $([ "$LLAMA_BF16" = 1 ] && echo bf16); do
    f=$GGUF_DIR/$m-$d.gguf
    [ -f "$f" ] || "$PYTHON" "$ROOT/tools/peer/make_gguf.py" --model "$m" --dtype "$d" --out "$f"
  done
done

{
  echo "date: $(date -Is)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "nproc: $(nproc)"
  echo "kvc: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown) (working tree)"
  echo "llama.cpp: $("$LLAMA_BENCH" --version 2>&1 | head -n 2 | tr '\n' ' ')"
  echo "settings: rounds=$ROUNDS llama: -p 0 -n $LLAMA_GEN -d $LLAMA_DEPTH -r 1"
} > "$OUT/meta.txt"

load() { cut -d' ' -f1 /proc/loadavg; }

for r in $(seq 1 "$ROUNDS"); do
  dir=$OUT/round$r
  mkdir -p "$dir"
  echo "round $r: bandwidth (load $(load))" >&2
  echo "bw $(load)" >> "$dir/load.txt"
  "$KVC_BIN/kvc_cpu_kernels_bench" --benchmark_filter='^ReadBandwidth' --benchmark_min_time=1 \
    --benchmark_format=json > "$dir/bw.json" 2>/dev/null
  "$READ_BW" 1024 5 > "$dir/read_bw.txt"
  for m in $MODELS; do
    for p in $PRECS; do
      for t in $THREADS; do
        echo "round $r: $m $p threads=$t (load $(load))" >&2
        echo "$m $p $t $(load)" >> "$dir/load.txt"
        "$KVC_BIN/kvc_decode_bench" --benchmark_filter="^BM_Decode/$m/$p/threads:$t/" \
          --benchmark_format=json > "$dir/kvc-$m-$p-t$t.json" 2>/dev/null
        # (an if, not `$(test && echo)`: under set -e a failing substitution in an assignment
        # would end the script when LLAMA_BF16=0)
        ldt=f32
        if [ "$p" != f32 ]; then
          ldt=f16
          if [ "$LLAMA_BF16" = 1 ]; then ldt="f16 bf16"; fi
        fi
        for d in $ldt; do
          "$LLAMA_BENCH" -m "$GGUF_DIR/$m-$d.gguf" -p 0 -n "$LLAMA_GEN" -d "$LLAMA_DEPTH" -r 1 \
            -t "$t" -o json > "$dir/llama-$m-$d-t$t.json" 2>/dev/null
        done
      done
    done
  done
done
echo "end $(load)" >> "$OUT/meta.txt"
echo "results in $OUT" >&2
python3 "$ROOT/tools/peer/summarize.py" "$OUT"
