#!/usr/bin/env bash
# The one GPU check, sized for one call of at most 600 s on a machine with an NVIDIA GPU,
# CUDA, CMake and Python (torch + transformers) but none of our Debian packages and no network.
# From the repository root, after tools/gpu_bundle.sh filled gpu_bundle/ on a development
# machine:
#
#   tools/gpu_check.sh                 the GPU run (budget 480 s; outputs in $OUT)
#   tools/gpu_check.sh --dry-run       everything that needs no GPU (also KVC_GPU_DRY_RUN=1)
#
# Options: --bundle DIR (default gpu_bundle/ when it exists), --build-dir DIR (use or build a
# CUDA build tree instead of a bundle; default build-cuda when there is no bundle), --no-build
# (use --build-dir as it is), --out DIR (default $OUT, else /tmp/kvc_gpu_check),
# --native auto|force|off (the native libkvc_cuda.so fallback; KVC_GPU_NATIVE).
#
# Steps, each with a time budget; step k must end by T0 + the budgets of steps 1..k (what an
# earlier step leaves unused passes on), so the whole run ends within their sum (480 s):
#   1 setup    GPU, library paths, bundle; libkvc_cuda.so checked (loads, probes the device)
#              and, only if it fails, rebuilt natively with this machine's nvcc and cuBLAS
#   2 host     kvc_cuda_host_tests (table mirror, conversion, loader, run-or-skip decision)
#   3 gpu      kvc_cuda_api_tests (backend selection, CPU/GPU parity, each CUDA switch against
#              the default path: GpuSwitches) and the count of GPU tests that ran
#              (tests/cuda/gpu_test_count.py): zero with a GPU is a failure
#   4 bench    kvc-bench for every mode, synthetic:pythia-2.8b float16 at 256..4096 (baseline
#              to 2048, Pythia's context), one process and time cap per mode
#   5 hf       transformers eager, same protocol (tools/hf_decode_bench.py), when torch loads
#   6 report   the table and the checks for every mode, a plot, $OUT
# A failing step is reported and the next one still runs. The dry run does steps 1-3 and 6 for
# real (GPU tests then skip and the count says "0 ran: no device"), replaces 4 by a tiny CPU
# run of every mode (synthetic:pythia-70m) so that the report and the plot are exercised, runs 5
# on the CPU with a tiny model if torch is importable, and says the GPU steps were skipped.
#
# Writes at most 6 files to $OUT: summary.md (printed at the end, under 10,000 characters),
# results.json, logs.tar.gz (every log, the gtest JSON, kvc-bench's JSON) and speed.svg.
# Exit status: 0 when no step failed (speed goals missed are reported, not failed), else 1.
set -uo pipefail
CALLER=$PWD
cd "$(dirname "$0")/.."
ROOT=$PWD
abs() { case "$1" in /*|"") echo "$1" ;; *) echo "$CALLER/$1" ;; esac; }

DRY=${KVC_GPU_DRY_RUN:-0}
BUNDLE=${KVC_GPU_BUNDLE:-}
BUILD=""
NO_BUILD=0
OUTDIR=${OUT:-/tmp/kvc_gpu_check}
NATIVE=${KVC_GPU_NATIVE:-auto}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --bundle) BUNDLE=$2; shift ;;
    --build-dir) BUILD=$2; shift ;;
    --no-build) NO_BUILD=1 ;;
    --out) OUTDIR=$2; shift ;;
    --native) NATIVE=$2; shift ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)"; exit 2 ;;
  esac
  shift
done
[ "$DRY" = 1 ] || DRY=0
BUNDLE=$(abs "$BUNDLE"); BUILD=$(abs "$BUILD"); OUTDIR=$(abs "$OUTDIR")

# ---- budgets (seconds) ---------------------------------------------------------------------
STEPS=(setup host gpu bench hf report)
BUDGET=(90 20 125 155 70 20)
LIMIT=${KVC_GPU_LIMIT:-480}  # what the budgets may add up to: one call is 600 s at most
MAX_OUT_FILES=6  # a call brings back 8 files at most
MAX_FILE_BYTES=$((15 * 1024 * 1024))
if [ -n "${KVC_GPU_BUDGETS:-}" ]; then read -r -a BUDGET <<<"$KVC_GPU_BUDGETS"; fi
SEQ_LENGTHS=${KVC_CHECK_SEQ_LENGTHS:-"256 512 1024 2048 4096"}
DECODE=${KVC_CHECK_DECODE_TOKENS:-32}
REPS=${KVC_CHECK_REPETITIONS:-2}
HF_DECODE=${KVC_CHECK_HF_DECODE_TOKENS:-16}
CONTEXT=2048     # Pythia's: kvc-bench refuses a full cache beyond it
MODEL=synthetic:pythia-2.8b
SEPARATORS=15,13,32,2,28,27,964,1157,3736,2195,3706,1163,209,186,187,2490,586,4928,50276,50275
if [ "$DRY" = 1 ]; then  # a tiny CPU stand-in for the GPU benchmark
  SEQ_LENGTHS=${KVC_DRY_SEQ_LENGTHS:-"16 32"}; DECODE=2; REPS=1; MODEL=synthetic:pythia-70m
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvc_gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
LOGS=$WORK/logs
mkdir -p "$LOGS/bench" "$OUTDIR"
declare -A STATUS USED
now() { date +%s; }
say() { echo "gpu_check: $*"; }
budget_sum() { local s=0 b; for b in "${BUDGET[@]}"; do s=$((s + b)); done; echo $s; }
# deadline_of K: T0 + budgets of steps 0..K
deadline_of() { local s=$T0 i; for ((i = 0; i <= $1; i++)); do s=$((s + BUDGET[i])); done; echo $s; }
# left DEADLINE [CAP]: seconds to the deadline, at most CAP
left() { local l=$(($1 - $(now))); [ -n "${2:-}" ] && [ "$2" -lt "$l" ] && l=$2; echo $l; }
# bounded SECONDS LOG CMD...: runs CMD with its output in LOG, killed after SECONDS
bounded() {
  local s=$1 log=$2; shift 2
  if [ "$s" -lt 1 ]; then echo "no time left in the budget" >>"$log"; return 124; fi
  timeout -k 5 "$s" "$@" >>"$log" 2>&1
}
begin() { CUR=$1; STEP_T0=$(now); DL=$(deadline_of "$2"); echo; say "== $1 (budget ${BUDGET[$2]} s, until +$((DL - T0)) s)"; }
finish() { STATUS[$CUR]=$1; USED[$CUR]=$(($(now) - STEP_T0)); say "$CUR: $1 (${USED[$CUR]} s)"; }

if [ ${#BUDGET[@]} -ne ${#STEPS[@]} ]; then say "KVC_GPU_BUDGETS needs ${#STEPS[@]} numbers"; exit 2; fi
if [ "$(budget_sum)" -gt "$LIMIT" ]; then
  say "the step budgets add up to $(budget_sum) s, over the limit of $LIMIT s"; exit 2
fi

# ---- binaries: a bundle, or a CUDA build tree (built here, before the clock starts) ---------
PREP_T0=$(now)
if [ -z "$BUILD" ] && [ -z "$BUNDLE" ] && [ -d "$ROOT/gpu_bundle/bin" ]; then BUNDLE=$ROOT/gpu_bundle; fi
if [ -n "$BUNDLE" ]; then
  SRC=$(cd "$BUNDLE" 2>/dev/null && pwd) || { say "no bundle at $BUNDLE"; exit 2; }
  SOURCE="bundle $BUNDLE"
else
  BUILD=${BUILD:-build-cuda}
  if [ "$NO_BUILD" = 0 ]; then
    say "building $BUILD (Release, CUDA on): the programs the check runs"
    { [ -f "$BUILD/CMakeCache.txt" ] ||
        cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVC_CUDA=ON; } \
      >"$LOGS/build.log" 2>&1 &&
      cmake --build "$BUILD" -j "${JOBS:-$(nproc)}" --target kvc kvc_cuda kvc-bench \
        kvc_policies kvc_cuda_host_tests kvc_cuda_api_tests >>"$LOGS/build.log" 2>&1 ||
      { tail -30 "$LOGS/build.log"
        say "the build failed (on a GPU machine without our packages, use tools/gpu_bundle.sh)"
        exit 2; }
  fi
  SRC=$(cd "$BUILD" 2>/dev/null && pwd) || { say "no build tree at $BUILD"; exit 2; }
  SOURCE="build tree $BUILD"
fi
for f in bin/kvc-bench bin/kvc_cuda_host_tests bin/kvc_cuda_api_tests lib/libkvc_cuda.so; do
  [ -e "$SRC/$f" ] || { say "$SOURCE lacks $f (built with the CUDA backend?)"; exit 2; }
done
PREP_S=$(($(now) - PREP_T0))

T0=$(now)
say "$([ "$DRY" = 1 ] && echo "DRY RUN: no GPU step runs; ")binaries from $SOURCE (ready in $PREP_S s, not in the budget)"
say "budget table (s): step budget until"
acc=0
for i in "${!STEPS[@]}"; do acc=$((acc + BUDGET[i])); printf '  %-7s %4d %5d\n' "${STEPS[i]}" "${BUDGET[i]}" "$acc"; done
say "total $(budget_sum) s of a $LIMIT s limit"

# ---- 1 setup ----------------------------------------------------------------------------------
begin setup 0
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
GPU=0
GPU_NAME="none"
if command -v nvidia-smi >/dev/null && nvidia-smi -L >"$LOGS/nvidia-smi.txt" 2>&1 &&
    grep -q "^GPU " "$LOGS/nvidia-smi.txt"; then
  GPU=1
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,compute_cap \
    --format=csv >>"$LOGS/nvidia-smi.txt" 2>&1
  GPU_NAME=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
fi
say "GPU: $GPU_NAME"
# Where a GPU is listed the GPU tests must run: a failed detection in them then fails too.
[ "$GPU" = 1 ] && export KVC_TEST_REQUIRE_GPU=1
ldpath="$SRC/lib"
[ -d "$SRC/deps" ] && ldpath="$ldpath:$SRC/deps"
for d in "$CUDA_HOME/lib64" /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
  [ -d "$d" ] && ldpath="$ldpath:$d"
done
export LD_LIBRARY_PATH="$ldpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KVC_TEST_SOURCE_DIR=$ROOT KVC_TEST_POLICY_DIR=$SRC/lib/kvc/policies
export KVC_POLICY_PATH=$SRC/lib/kvc/policies KVC_TEST_LIBKVC=$SRC/lib/libkvc.so
setup_notes=()
# Built on another image: the bundled libstdc++ if the system's is too old for these binaries.
if ! "$SRC/bin/kvc-bench" --version >"$LOGS/start.log" 2>&1 && [ -d "$SRC/compat" ]; then
  export LD_LIBRARY_PATH="$SRC/compat:$LD_LIBRARY_PATH"
  setup_notes+=("bundled libstdc++ used")
fi
# Libraries the CUDA backend needs that the loader cannot find (cuBLAS of another CUDA
# install, e.g. the one of Python's nvidia-* wheels): their folders are added.
find_missing_libs() {
  local lib=$1 missing so dir
  missing=$(ldd "$lib" 2>/dev/null | awk '/not found/ {print $1}')
  [ -z "$missing" ] && return 0
  local roots=("$CUDA_HOME" /usr/local/cuda /usr/lib /usr/local/lib)
  if command -v python3 >/dev/null; then
    roots+=($(python3 -c 'import nvidia, os; print(" ".join(nvidia.__path__))' 2>/dev/null))
  fi
  for so in $missing; do
    dir=$(find "${roots[@]}" -name "$so" -print -quit 2>/dev/null | xargs -r dirname)
    if [ -n "$dir" ]; then
      export LD_LIBRARY_PATH="$dir:$LD_LIBRARY_PATH"
      setup_notes+=("$so from $dir")
    else
      setup_notes+=("$so not found")
    fi
  done
}
# library_works LIB: it loads and probes the device (with a GPU), or loads and reports "no
# CUDA device" (without): CudaLoader.RealLibraryLoadsAndProbesTheDevice, not skipped.
library_works() {
  local log=$LOGS/library_check.log
  echo "--- $1" >>"$log"
  KVC_CUDA_LIBRARY=$1 bounded "$(left "$DL" 60)" "$log" "$SRC/bin/kvc_cuda_host_tests" \
    --gtest_filter='CudaLoader.RealLibraryLoadsAndProbesTheDevice' || return 1
  ! tail -5 "$log" | grep -q "SKIPPED"
}
native_build() {  # libkvc_cuda.so from core/cuda/CMakeLists.txt, with this machine's CUDA
  local dir=$WORK/native arch=90 cc
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)
  [[ "$cc" =~ ^[0-9]+$ ]] && arch=$cc
  mkdir -p "$dir"
  cat >"$dir/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.24)
project(kvc_cuda_native LANGUAGES C CXX)
set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
set(CMAKE_CXX_VISIBILITY_PRESET hidden)
set(CMAKE_VISIBILITY_INLINES_HIDDEN ON)
include(GNUInstallDirs)
# core/cuda/CMakeLists.txt names its sources through PROJECT_SOURCE_DIR and needs kvc_abi.
set(PROJECT_SOURCE_DIR "$ROOT")
add_library(kvc_abi INTERFACE)
target_include_directories(kvc_abi INTERFACE "$ROOT/abi/include")
add_subdirectory("$ROOT/core/cuda" cuda)
EOF
  local gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  bounded "$(left "$DL")" "$LOGS/native_build.log" cmake -S "$dir" -B "$dir/build" "${gen[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" \
    -DCMAKE_CUDA_COMPILER="$(command -v nvcc || echo "$CUDA_HOME/bin/nvcc")" &&
    bounded "$(left "$DL")" "$LOGS/native_build.log" \
      cmake --build "$dir/build" -j "$(nproc)" --target kvc_cuda || return 1
  NATIVE_LIB=$(find "$dir/build" -name libkvc_cuda.so -print -quit)
  [ -n "$NATIVE_LIB" ]
}
LIB=$SRC/lib/libkvc_cuda.so
find_missing_libs "$LIB"
setup_status=ok
kind=$([ -n "$BUNDLE" ] && echo bundled || echo built)
if [ "$NATIVE" != force ] && library_works "$LIB"; then
  library="$kind, loads $([ "$GPU" = 1 ] && echo "and probes the GPU" || echo "(no device to probe)")"
elif [ "$NATIVE" = off ]; then
  library="FAILED: the $kind library does not work (library_check.log)"
  setup_status=FAILED
else
  why=forced
  if [ "$NATIVE" != force ]; then  # the most telling line of the check's log
    for pattern in "probe fails: .*" "cannot load .*" "undefined symbol.*" "not found.*" "rror.*"; do
      why=$(grep -o -m1 -E "$pattern" "$LOGS/library_check.log" | cut -c1-160) && break
    done
  fi
  say "building libkvc_cuda.so natively ($why)"
  if native_build && library_works "$NATIVE_LIB"; then
    LIB=$NATIVE_LIB
    library="native build, loads (the $kind one: $why)"
  else
    library="FAILED: neither the $kind nor a native libkvc_cuda.so works (library_check.log, native_build.log)"
    setup_status=FAILED
  fi
fi
export KVC_CUDA_LIBRARY=$LIB  # for every command from here on
say "libkvc_cuda.so: $library"
# A bundle built from other sources than these is reported (the check would test old code).
if [ -f "$SRC/SOURCES.sha256" ]; then
  if [ "$(tools/gpu_bundle.sh --sources-hash)" = "$(cat "$SRC/SOURCES.sha256")" ]; then
    setup_notes+=("bundle matches the sources")
  else
    setup_notes+=("STALE BUNDLE: built from other sources than these")
  fi
fi
if [ "$GPU" = 0 ] && [ "$DRY" = 0 ]; then
  setup_status=FAILED
  setup_notes+=("no GPU: nvidia-smi lists none (use --dry-run on a machine without one)")
fi
[ ${#setup_notes[@]} -gt 0 ] && say "notes: $(IFS=';'; echo "${setup_notes[*]}")"
finish "$setup_status"

# ---- 2 host tests ---------------------------------------------------------------------------
begin host 1
bounded "$(left "$DL")" "$LOGS/host_tests.log" "$SRC/bin/kvc_cuda_host_tests" --gtest_brief=1
host_rc=$?
if [ "$host_rc" = 0 ]; then
  finish "ok ($(grep -m1 -oE '[0-9]+ tests? from' "$LOGS/host_tests.log" | cut -d' ' -f1) tests)"
else
  grep -E "^\[  FAILED  \] [A-Za-z]" "$LOGS/host_tests.log" | sort -u | head -10
  finish "FAILED (status $host_rc; see host_tests.log)"
fi

# ---- 3 GPU tests and their count ------------------------------------------------------------
begin gpu 2
bounded "$(left "$DL")" "$LOGS/gpu_tests.log" "$SRC/bin/kvc_cuda_api_tests" \
  --gtest_output="json:$LOGS/gpu_tests.json"
api_rc=$?
python3 tests/cuda/gpu_test_count.py "$LOGS/gpu_tests.json" >"$LOGS/gpu_count.txt" 2>&1
count_rc=$?
head -7 "$LOGS/gpu_count.txt"
other_failed=$(grep -E "^\[  FAILED  \] [A-Za-z]" "$LOGS/gpu_tests.log" | grep -v "Gpu" | sort -u | head -5)
[ -n "$other_failed" ] && echo "$other_failed"
GPU_COUNT=$(head -1 "$LOGS/gpu_count.txt")
if [ "$api_rc" = 124 ] || [ "$api_rc" -gt 128 ]; then
  last_run=$(grep -E "^\[ RUN      \]" "$LOGS/gpu_tests.log" | tail -1 | cut -c14-)
  finish "FAILED (kvc_cuda_api_tests $([ "$api_rc" = 124 ] && echo "ran out of time" || echo "crashed, status $api_rc") in $last_run)"
elif [ "$count_rc" = 1 ] || [ -n "$other_failed" ] || { [ "$api_rc" != 0 ] && [ "$count_rc" = 0 ]; }; then
  finish "FAILED (${GPU_COUNT#gpu tests: })"
elif [ "$count_rc" = 77 ]; then
  finish "skipped: 0 GPU tests ran: $(sed -n 's/^gpu tests: skipped, 0 ran: //p' "$LOGS/gpu_count.txt")"
elif [ "$count_rc" = 0 ]; then
  finish "ok (${GPU_COUNT#gpu tests: })"
else
  finish "FAILED (the count did not run: status $count_rc)"
fi

# ---- 4 kvc-bench, every mode ----------------------------------------------------------------
begin bench 3
# Every mode kvc-bench knows, the seed's first.
listed=$("$SRC/bin/kvc-bench" --list_policies 2>/dev/null | awk '/^[a-z]/ {print $1}')
MODES=()
for m in baseline streaming h2o lazy_h2o sepllm unified lazy_unified $listed; do
  [[ " ${MODES[*]} " == *" $m "* ]] || MODES+=("$m")
done
[ -n "${KVC_CHECK_MODES:-}" ] && read -r -a MODES <<<"$KVC_CHECK_MODES"
if [ "$DRY" = 1 ]; then bench_args=(--backend cpu --threads 1); else bench_args=(--backend cuda); fi
if [ "$DRY" = 0 ] && [ "$GPU" = 0 ]; then
  finish "skipped: no GPU"
else
  # A cap per mode, so that one hanging mode leaves time to the others.
  cap=$((BUDGET[3] * 2 / ${#MODES[@]}))
  [ "$cap" -lt 20 ] && cap=20
  failed=()
  for m in "${MODES[@]}"; do
    lengths=""
    for s in $SEQ_LENGTHS; do [ "$m" = baseline ] && [ "$s" -gt "$CONTEXT" ] || lengths="$lengths $s"; done
    t=$(now)
    # Synthetic models have no tokenizer: SepLLM's 20 separator ids of the GPT-NeoX tokenizer.
    sep=()
    case "$m" in sepllm|unified|lazy_unified) sep=(--param "separators=$SEPARATORS") ;; esac
    bounded "$(left "$DL" "$cap")" "$LOGS/bench/$m.log" "$SRC/bin/kvc-bench" --mode "$m" \
      --model_name_or_path "$MODEL" --dtype f16 "${bench_args[@]}" "${sep[@]}" --seq_lengths $lengths \
      --num_decode_tokens "$DECODE" --warmup 1 --repetitions "$REPS" \
      --output_dir "$LOGS/bench"
    rc=$?
    last=$(grep -E "ms/token" "$LOGS/bench/$m.log" | tail -1 | sed 's/ (median.*//')
    [ "$rc" = 0 ] || failed+=("$m")
    printf '  %-13s %s %3d s  %s\n' "$m" "$([ "$rc" = 0 ] && echo ok || { [ "$rc" = 124 ] && echo "FAILED (out of time)" || echo "FAILED ($rc)"; })" \
      $(($(now) - t)) "${last:-$(grep -m1 -iE "error|what" "$LOGS/bench/$m.log" | cut -c1-120)}"
  done
  if [ ${#failed[@]} -eq 0 ]; then
    finish "ok (${#MODES[@]} modes$([ "$DRY" = 1 ] && echo ", on the CPU, $MODEL: a dry run of the step"))"
  else
    finish "FAILED (${#failed[@]} of ${#MODES[@]} modes: ${failed[*]})"
  fi
fi

# ---- 5 transformers eager -------------------------------------------------------------------
begin hf 4
HF_JSON=""
if ! python3 -c "import torch, transformers" >"$LOGS/hf.log" 2>&1; then
  finish "skipped: torch/transformers not importable ($(tail -1 "$LOGS/hf.log" | cut -c1-80))"
elif [ "$DRY" = 1 ]; then
  if bounded "$(left "$DL")" "$LOGS/hf.log" python3 tools/hf_decode_bench.py measure --tiny \
      --device cpu --seq_lengths $SEQ_LENGTHS --num_decode_tokens 2 --out "$LOGS/hf.json"; then
    finish "ok (tiny model on the CPU: a dry run of the step)"
  else
    finish "FAILED (see hf.log)"
  fi
elif [ "$GPU" = 0 ]; then
  finish "skipped: no GPU"
elif bounded "$(left "$DL")" "$LOGS/hf.log" env PYTHONUNBUFFERED=1 python3 tools/hf_decode_bench.py \
    measure --seq_lengths $SEQ_LENGTHS --num_decode_tokens "$HF_DECODE" --out "$LOGS/hf.json"; then
  HF_JSON=$LOGS/hf.json
  finish "ok"
else
  grep -v -iE "deprecat|output = func" "$LOGS/hf.log" | tail -3
  finish "FAILED (see hf.log)"
fi
[ -f "$LOGS/hf.json" ] && HF_JSON=$LOGS/hf.json

# ---- 6 report and $OUT ----------------------------------------------------------------------
begin report 5
report_args=(--kvc_dir "$LOGS/bench" --modes "${MODES[@]}" --lengths $SEQ_LENGTHS
             --context "$CONTEXT" --json "$WORK/speed.json" --plot "$WORK/speed.svg")
[ -n "$HF_JSON" ] && report_args+=(--hf "$HF_JSON")
[ "$DRY" = 1 ] && report_args+=(--not_judged "dry run: CPU stand-in numbers")
bounded "$(left "$DL" 30)" "$WORK/speed.md" python3 tools/hf_decode_bench.py report "${report_args[@]}"
report_rc=$?
cp "$WORK/speed.md" "$LOGS/"
speed_line=$(grep -m1 "^checks:" "$WORK/speed.md")
tar -czf "$WORK/logs.tar.gz" -C "$WORK" logs
if [ "$(stat -c %s "$WORK/logs.tar.gz")" -gt "$MAX_FILE_BYTES" ]; then  # without the images
  tar -czf "$WORK/logs.tar.gz" -C "$WORK" --exclude='*.png' --exclude='*.svg' logs
fi
out_files=(summary.md results.json)
for f in logs.tar.gz speed.svg; do
  if [ ! -f "$WORK/$f" ]; then continue; fi
  if [ "$(stat -c %s "$WORK/$f")" -gt "$MAX_FILE_BYTES" ]; then
    say "$f is over $MAX_FILE_BYTES bytes: not copied"; continue
  fi
  out_files+=("$f")
done
if [ "$report_rc" != 0 ]; then
  finish "FAILED (the report: status $report_rc, see speed.md)"
elif [ ${#out_files[@]} -gt "$MAX_OUT_FILES" ]; then
  finish "FAILED (${#out_files[@]} files for \$OUT, over $MAX_OUT_FILES)"
else
  finish "ok (${#out_files[@]} files for \$OUT, at most $MAX_OUT_FILES)"
fi
FAILED_STEPS=()
for s in "${STEPS[@]}"; do [[ "${STATUS[$s]:-}" == FAILED* ]] && FAILED_STEPS+=("$s"); done

for i in "${!STEPS[@]}"; do
  printf '%s\t%s\t%s\t%s\n' "${STEPS[i]}" "${BUDGET[i]}" "${USED[${STEPS[i]}]:-}" "${STATUS[${STEPS[i]}]:-}"
done >"$WORK/steps.tsv"
python3 - "$WORK" "$DRY" "$GPU_NAME" "$SOURCE" "$library" "${#FAILED_STEPS[@]}" \
  >>"$WORK/package.log" 2>&1 <<'EOF'
import json, os, sys
work, dry, gpu, source, library, failed = sys.argv[1:7]
def read(p):
    try:
        return json.load(open(p))
    except (OSError, ValueError):
        return None
steps = [dict(zip(("step", "budget_s", "used_s", "status"), l.split("\t")))
         for l in open(os.path.join(work, "steps.tsv")).read().splitlines()]
p = os.path.join(work, "logs", "gpu_count.txt")
gpu_count = open(p).read().splitlines() if os.path.exists(p) else []
json.dump(dict(result="PASS" if failed == "0" else "FAIL", dry_run=dry == "1", gpu=gpu,
               binaries=source, libkvc_cuda=library, steps=steps, gpu_tests=gpu_count,
               speed=read(os.path.join(work, "speed.json"))),
          open(os.path.join(work, "results.json"), "w"), indent=1)
EOF
[ -f "$WORK/results.json" ] || echo '{"result": "FAIL", "error": "results.json not written"}' >"$WORK/results.json"

# summary.md: printed last (the caller keeps only the end of the output), under 10,000 bytes.
{
  echo "# kvc GPU check $(date -u +%FT%TZ)$([ "$DRY" = 1 ] && echo " (DRY RUN: the GPU steps are skipped)")"
  echo
  if [ ${#FAILED_STEPS[@]} -eq 0 ]; then
    echo "result: PASS${speed_line:+ (speed ${speed_line})}"
  else
    echo "result: FAIL (${FAILED_STEPS[*]})${speed_line:+; speed ${speed_line}}"
  fi
  echo "GPU: $GPU_NAME; binaries: $SOURCE; libkvc_cuda.so: $library"
  [ ${#setup_notes[@]} -gt 0 ] && echo "notes: $(IFS=';'; echo "${setup_notes[*]}")"
  echo
  echo "| step | budget s | until s | used s | status |"
  echo "|---|---|---|---|---|"
  acc=0
  for i in "${!STEPS[@]}"; do
    acc=$((acc + BUDGET[i]))
    echo "| ${STEPS[i]} | ${BUDGET[i]} | $acc | ${USED[${STEPS[i]}]:--} | ${STATUS[${STEPS[i]}]:--} |" | cut -c1-300
  done
  echo "| total | $(budget_sum) (limit $LIMIT) | | $(($(now) - T0)) | |"
  echo
  head -12 "$LOGS/gpu_count.txt" 2>/dev/null | cut -c1-300
  grep -E "^\[  FAILED  \]" "$LOGS/host_tests.log" 2>/dev/null | head -5
  echo
  head -c 6000 "$WORK/speed.md"
  echo
  echo "\$OUT ($OUTDIR): ${out_files[*]}"
} >"$WORK/summary.md"
for f in "${out_files[@]}"; do cp "$WORK/$f" "$OUTDIR/"; done
echo
head -c 10000 "$WORK/summary.md"
[ ${#FAILED_STEPS[@]} -eq 0 ]
