#!/usr/bin/env bash
# Installs every build and test dependency of kvc from Debian packages, then prepares the
# embedded evaluation data. Idempotent: safe to run again.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libgtest-dev libgmock-dev libbenchmark-dev   # tests and benchmarks
  libboost-dev                                 # Boost.DLL (header-only with BOOST_DLL_USE_STD_FS)
  libtomlplusplus-dev nlohmann-json3-dev       # TOML config, JSON
  libhwy-dev                                   # SIMD kernels with run-time dispatch
  libpcre2-dev libutf8proc-dev                 # tokenizer: split pattern, NFC
  bible-kjv                                    # the embedded model's evaluation text
  gnuplot-nox                                  # figures of kvc-eval and kvc-bench
  libssl-dev                                   # SHA-256 of the files results record
  cargo rustc golang-go python3-pytest python3-numpy  # bindings tests
  python3-venv file                            # packaging checks: pip in a venv, CPack's .deb
  abigail-tools                                # ABI compatibility check
  clang libclang-rt-14-dev                     # libFuzzer targets (scripts/fuzz.sh)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all Debian packages present"
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$here/scripts/prepare_kjv.sh" ]; then
  "$here/scripts/prepare_kjv.sh" "$here/data/kjv"
fi
