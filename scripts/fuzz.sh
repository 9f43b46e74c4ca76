#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, AddressSanitizer + UndefinedBehaviorSanitizer) and runs
# each one for SECONDS seconds (default 60), one after the other, starting from the committed
# seed corpus (tests/fuzz/corpus/<target>). A crash, a sanitizer report, a leak or an unexpected
# exception stops the script with the reproducer saved in build/fuzz/findings/<target>/.
#
#   scripts/fuzz.sh                  # every target, 60 s each
#   scripts/fuzz.sh 600              # 10 minutes each
#   scripts/fuzz.sh 60 fuzz_plan     # some targets only
#   FUZZ_JOBS=1 FUZZ_BUILD_ONLY=1    # build parallelism; only build
#
# New inputs found while fuzzing go to build/fuzz/corpus/<target>/, never into the source tree
# (merge interesting ones by hand with -merge=1 to keep the committed seeds small).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
all=(fuzz_safetensors fuzz_config_json fuzz_tokenizer_json fuzz_tokenizer_encode
     fuzz_toml_config fuzz_policy_params fuzz_plan)
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")

build=build/fuzz
jobs="${FUZZ_JOBS:-$(nproc)}"
cc="${CC:-clang}"
cxx="${CXX:-clang++}"
if ! command -v "$cxx" >/dev/null; then
  echo "fuzz.sh: $cxx not found (apt-get install clang libclang-rt-14-dev)" >&2
  exit 1
fi

start=$(date +%s)
CC="$cc" CXX="$cxx" cmake -S . -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVC_SANITIZE= -DKVC_CUDA=OFF \
  -DKVC_BUILD_BENCHMARKS=OFF -DKVC_BUILD_FUZZERS=ON >/dev/null
cmake --build "$build" -j "$jobs" --target "${targets[@]}"
echo "fuzz.sh: build took $(( $(date +%s) - start )) s"
[ -z "${FUZZ_BUILD_ONLY:-}" ] || exit 0

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
status=0
for t in "${targets[@]}"; do
  corpus="$build/corpus/$t"
  findings="$build/findings/$t"
  mkdir -p "$corpus" "$findings"
  dict=()
  [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
  t0=$(date +%s)
  # -rss_limit_mb / -malloc_limit_mb: an absurd size taken from the input must be rejected
  # before it is allocated, so a huge allocation is itself a finding.
  if "$build/bin/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -malloc_limit_mb=1024 -max_len=65536 -print_final_stats=1 "${dict[@]}" \
      -artifact_prefix="$findings/" "$corpus" "tests/fuzz/corpus/$t" \
      >"$build/$t.log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$build/$t.log" |
           grep -o '[0-9]*$' || true)
    echo "fuzz.sh: $t: $(( $(date +%s) - t0 )) s, ${runs:-?} runs, no finding"
  else
    echo "fuzz.sh: $t: FINDING after $(( $(date +%s) - t0 )) s;" \
         "see $build/$t.log and $findings/" >&2
    tail -n 40 "$build/$t.log" >&2
    status=1
  fi
done
exit $status
