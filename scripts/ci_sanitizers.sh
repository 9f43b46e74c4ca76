#!/usr/bin/env bash
# Sanitizer CI job (docs/hardening.md):
#  1. preset asan (AddressSanitizer + UndefinedBehaviorSanitizer, LeakSanitizer included):
#     build everything and run the whole ctest suite under it;
#  2. preset tsan (ThreadSanitizer): build and run the concurrency tests (label "concurrency")
#     and the thread pool's unit tests.
# Any sanitizer report fails the job: sanitizers are built with -fno-sanitize-recover=all and
# the options below make leaks and races fatal.
#
#   scripts/ci_sanitizers.sh            # both
#   scripts/ci_sanitizers.sh asan       # one of them
#   ASAN_CTEST_ARGS="-LE golden"        # ctest arguments for the asan run (default below)
#   JOBS=2                              # build and test parallelism (default: nproc)
set -euo pipefail
cd "$(dirname "$0")/.."

jobs="${JOBS:-$(nproc)}"
what=("$@")
((${#what[@]})) || what=(asan tsan)

asan_defaults=detect_leaks=1:detect_stack_use_after_return=1
asan_defaults+=:check_initialization_order=1:strict_init_order=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-$asan_defaults}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}"

timed() {
  local label="$1"
  shift
  local t0
  t0=$(date +%s)
  "$@"
  echo "ci_sanitizers: $label took $(( $(date +%s) - t0 )) s"
}

# Newer kernels randomise mmap with more bits than older TSan runtimes accept; run TSan
# programs without address randomisation when the kernel does that.
tsan_wrap=()
rnd_bits="$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 28)"
if [ "$rnd_bits" -gt 28 ] && command -v setarch >/dev/null; then
  tsan_wrap=(setarch "$(uname -m)" -R)
fi

for w in "${what[@]}"; do
  case "$w" in
    asan)
      timed "asan configure" cmake --preset asan >/dev/null
      timed "asan build" cmake --build --preset asan -j "$jobs"
      # Left out by default: tests whose programs are not built by this tree (the Rust, Go and
      # Python bindings, the out-of-tree SDK consumer). An uninstrumented program cannot load
      # the instrumented libkvc.so unless the ASan runtime is preloaded.
      # shellcheck disable=SC2086
      timed "asan ctest" ctest --preset asan -j "$jobs" ${ASAN_CTEST_ARGS:--LE ^(bindings|sdk)$}
      ;;
    tsan)
      timed "tsan configure" cmake --preset tsan >/dev/null
      timed "tsan build" \
        cmake --build --preset tsan -j "$jobs" --target kvc_stress_concurrency_tests cpu_kernels_test
      timed "tsan run" "${tsan_wrap[@]}" build/tsan/bin/kvc_stress_concurrency_tests
      # The pool's own protocol (chunk claims, done counts, wake-ups), job after job.
      timed "tsan thread pool" "${tsan_wrap[@]}" build/tsan/bin/cpu_kernels_test \
        --gtest_filter='ThreadPool.*'
      ;;
    *)
      echo "ci_sanitizers: unknown job '$w' (asan or tsan)" >&2
      exit 2
      ;;
  esac
done
