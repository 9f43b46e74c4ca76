#!/usr/bin/env bash
# The one GPU check, for a machine with an NVIDIA GPU, CUDA, CMake, Ninja and Python with
# torch + transformers, but none of our Debian packages and no network. Run from the
# repository root, after tools/gpu_bundle.sh built gpu_bundle/ on a development machine:
#
#   tools/gpu_check.sh            (about 5 minutes on an H200; everything lands in $OUT)
#
# Steps (each bounded by a timeout; a failing step is reported and the next one still runs):
#   1. builds libkvc_cuda.so natively with nvcc (sm_90), used only if the bundled one fails;
#   2. the CUDA tests (host logic, backend selection, CPU/GPU parity on the fixtures);
#   3. kvc-bench for every mode, synthetic:pythia-2.8b, float16, 512/1024/2048/4096
#      (baseline stops at 2048: kvc-bench refuses a full cache beyond the model's context);
#   4. the same decode with transformers (eager, fp16, HF cache) and the copy bandwidth;
#   5. one markdown table of ms/token with the ratio, and the weight-bandwidth floor.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUNDLE=${KVC_GPU_BUNDLE:-$ROOT/gpu_bundle}
OUT=${OUT:-/tmp/kvc_gpu_check}
DECODE=${KVC_CHECK_DECODE_TOKENS:-64}
mkdir -p "$OUT"
status=()
step() { echo; echo "=== $* ($(date +%T))"; }
record() { status+=("$1: $2"); }
T0=$(date +%s)

[ -d "$BUNDLE/bin" ] || { echo "no bundle at $BUNDLE: run tools/gpu_bundle.sh first"; exit 2; }
CUDA_LIB=${CUDA_HOME:-/usr/local/cuda}/lib64
export LD_LIBRARY_PATH="$BUNDLE/lib:$BUNDLE/deps:$CUDA_LIB:${LD_LIBRARY_PATH:-}"
export KVC_TEST_SOURCE_DIR=$ROOT KVC_TEST_POLICY_DIR=$BUNDLE/lib/kvc/policies
export KVC_POLICY_PATH=$BUNDLE/lib/kvc/policies
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"

# Binaries built on another image: fall back to the bundled libstdc++ if the system's is older.
if ! "$BUNDLE/bin/kvc-bench" --help >/dev/null 2>"$OUT/start.err"; then
  echo "kvc-bench does not start with the system libraries ($(head -c 300 "$OUT/start.err"));"
  echo "retrying with the bundled libstdc++"
  export LD_LIBRARY_PATH="$BUNDLE/compat:$LD_LIBRARY_PATH"
fi

step "1. native build of libkvc_cuda.so (sm_90)"
NATIVE=$OUT/native
mkdir -p "$NATIVE"
if command -v nvcc >/dev/null || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then
  NVCC=$(command -v nvcc || echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc")
  INC="-Icore/src -Iabi/include -Icore/cuda -I${CUDA_HOME:-/usr/local/cuda}/include"
  if timeout 150 bash -c "
      set -e
      $NVCC -O3 -std=c++17 -Xcompiler -fPIC,-fvisibility=hidden -gencode arch=compute_90,code=sm_90 \
        $INC -c core/cuda/kernels.cu -o $NATIVE/kernels.o
      for f in core/cuda/cuda_backend.cpp core/cuda/table_mirror.cpp core/cuda/host_convert.cpp \
               core/src/engine/kv_cache.cpp; do
        g++ -O2 -std=c++20 -fPIC -fvisibility=hidden $INC -c \$f -o $NATIVE/\$(basename \$f).o
      done
      g++ -shared -o $NATIVE/libkvc_cuda.so $NATIVE/*.o -L$CUDA_LIB -lcublas -lcudart_static \
        -ldl -lrt -lpthread -Wl,--no-undefined"; then
    record build ok
  else
    record build FAILED
  fi
else
  record build "skipped (no nvcc)"
fi
# The bundled library is preferred (it is what the tests were built with); the native one
# replaces it only if it cannot be opened.
if ! KVC_CUDA_LIBRARY=$BUNDLE/lib/libkvc_cuda.so timeout 60 "$BUNDLE/bin/kvc_cuda_host_tests" \
      --gtest_filter='CudaLoader.RealLibrary*' >"$OUT/loader.log" 2>&1 \
    && [ -f "$NATIVE/libkvc_cuda.so" ]; then
  echo "the bundled libkvc_cuda.so does not load; using the native build"
  export KVC_CUDA_LIBRARY=$NATIVE/libkvc_cuda.so
fi

step "2. CUDA tests"
timeout 120 "$BUNDLE/bin/kvc_cuda_host_tests" --gtest_brief=1 >"$OUT/host_tests.log" 2>&1 \
  && record host_tests ok || record host_tests FAILED
tail -3 "$OUT/host_tests.log"
timeout 180 "$BUNDLE/bin/kvc_cuda_api_tests" --gtest_output="xml:$OUT/gpu_tests.xml" \
  >"$OUT/gpu_tests.log" 2>&1 && record gpu_tests ok || record gpu_tests FAILED
grep -E "^\[  (FAILED|SKIPPED|PASSED) |Failure|Expected|Which is|actual" "$OUT/gpu_tests.log" \
  | head -60

step "3. kvc-bench, synthetic:pythia-2.8b, float16, CUDA"
for mode in baseline streaming h2o lazy_h2o sepllm unified; do
  lengths="512 1024 2048 4096"
  [ "$mode" = baseline ] && lengths="512 1024 2048"
  timeout 100 "$BUNDLE/bin/kvc-bench" --mode "$mode" --model_name_or_path synthetic:pythia-2.8b \
    --dtype f16 --backend cuda --seq_lengths $lengths --num_decode_tokens "$DECODE" \
    --warmup 1 --repetitions 1 --output_dir "$OUT/bench" >"$OUT/bench_$mode.log" 2>&1 \
    && record "bench $mode" ok || record "bench $mode" "FAILED (see $OUT/bench_$mode.log)"
  grep -E "ms/token|error" "$OUT/bench_$mode.log" | head -8
done

step "4. transformers eager, same protocol"
timeout 240 python3 tools/hf_decode_bench.py measure --seq_lengths 512 1024 2048 4096 \
  --num_decode_tokens 32 --out "$OUT/hf.json" >"$OUT/hf.log" 2>&1 \
  && record transformers ok || record transformers "FAILED (see $OUT/hf.log)"
grep -v -i "deprecat\|output = func" "$OUT/hf.log" | tail -8

step "5. table"
python3 tools/hf_decode_bench.py report --hf "$OUT/hf.json" --kvc_dir "$OUT/bench" \
  | tee "$OUT/table.md"

echo
echo "=== summary ($(( $(date +%s) - T0 )) s; outputs in $OUT)"
printf '  %s\n' "${status[@]}"
