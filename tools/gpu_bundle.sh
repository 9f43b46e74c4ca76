#!/usr/bin/env bash
# Builds kvc with the CUDA backend (Release) and gathers what tools/gpu_check.sh needs on a GPU
# machine whose image has CUDA but none of our Debian packages: the programs, libkvc.so,
# libkvc_cuda.so, the policy plugins, and the non-CUDA shared libraries they load (copied under
# their sonames). CUDA's own libraries (cuBLAS) are not copied: the GPU image has them.
#
#   tools/gpu_bundle.sh [build-dir] [bundle-dir]     (defaults: build-cuda, gpu_bundle)
#   tools/gpu_bundle.sh --sources-hash                (prints the hash of the C++/CUDA sources)
#
# The bundle records that hash (SOURCES.sha256): tools/gpu_check.sh reports a bundle built from
# other sources than the tree it runs in. Then, on the GPU machine, from the repository root:
# tools/gpu_check.sh (docs/cuda.md).
set -euo pipefail
cd "$(dirname "$0")/.."

# Every source the bundled programs are built from (paths relative to the repository root).
sources_hash() {
  find CMakeLists.txt abi core policies hosts sdk tests/cuda -type f \( -name '*.cpp' \
      -o -name '*.cc' -o -name '*.h' -o -name '*.hpp' -o -name '*.cu' -o -name '*.cuh' \
      -o -name CMakeLists.txt \) -print0 2>/dev/null |
    LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}
if [ "${1:-}" = --sources-hash ]; then
  sources_hash
  exit 0
fi
BUILD=${1:-build-cuda}
BUNDLE=${2:-gpu_bundle}
JOBS=${JOBS:-2}

cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVC_CUDA=ON >/dev/null
cmake --build "$BUILD" -j "$JOBS" --target kvc kvc_cuda kvc-bench kvc_policies \
  kvc_cuda_host_tests kvc_cuda_api_tests

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/bin" "$BUNDLE/lib/kvc/policies" "$BUNDLE/deps"
sources_hash >"$BUNDLE/SOURCES.sha256"
cp "$BUILD"/bin/{kvc-bench,kvc_cuda_host_tests,kvc_cuda_api_tests} "$BUNDLE/bin/"
cp -P "$BUILD"/lib/libkvc.so* "$BUILD/lib/libkvc_cuda.so" "$BUNDLE/lib/"
cp "$BUILD"/lib/kvc/policies/*.so "$BUNDLE/lib/kvc/policies/"

# Shared libraries outside glibc, libstdc++ and CUDA, found through ldd. libstdc++/libgcc_s go
# to compat/, used by gpu_check.sh only if the GPU image's own are too old for these binaries
# (a newer system libstdc++ is preferred: cuBLAS may need it).
mkdir -p "$BUNDLE/compat"
cp -L "$(g++ -print-file-name=libstdc++.so.6)" "$(g++ -print-file-name=libgcc_s.so.1)" \
  "$BUNDLE/compat/"
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|librt\.so|libpthread\.so|libstdc\+\+|libgcc_s|libcublas|libcublasLt|libcudart|libcuda\.so)'
for f in "$BUNDLE"/bin/* "$BUNDLE"/lib/*.so* "$BUNDLE"/lib/kvc/policies/*.so; do
  ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r soname path; do
  [[ "$soname" =~ $skip ]] && continue
  [[ "$path" == "$PWD/$BUILD"/* ]] && continue
  cp -L "$path" "$BUNDLE/deps/$soname"
done

strip --strip-unneeded "$BUNDLE"/bin/* "$BUNDLE"/deps/* "$BUNDLE"/compat/* 2>/dev/null || true
echo "bundle: $BUNDLE ($(du -sh "$BUNDLE" | cut -f1))"
ls "$BUNDLE/deps"
