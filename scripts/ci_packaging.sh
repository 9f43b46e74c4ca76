#!/usr/bin/env bash
# Packaging CI job (docs/install.md): kvc used as installed software, from outside the tree.
#  1. python: a fresh venv, `pip install .` (libkvc and the policies inside the wheel, built
#     with ccache), then `import kvc` and a scored sentence from another folder with no KVC_*
#     variable; wrong shapes and types and a missing model raise the right exceptions;
#  2. deb: the Debian package made by CPack from the release build (nothing is rebuilt),
#     installed with apt; the installed kvc-eval (embedded model and evaluation text from
#     /usr/share/kvc) and kvc-bench run from another folder; a missing default names every place
#     looked at; the SDK template is built out of tree with find_package(kvc) and the same
#     policy with pkg-config, and both run; the C example is built with pkg-config and run;
#  3. bindings: a dependent Rust crate (path dependency on the installed crate sources, offline)
#     and a dependent Go module (go.mod replace line, no proxy) are built outside the tree
#     against the installed package and run without LD_LIBRARY_PATH.
# The package is purged at the end unless it was installed before or KVC_PACKAGING_KEEP=1.
#
#   scripts/ci_packaging.sh                 # all three (needs build/release: scripts/test.sh)
#   scripts/ci_packaging.sh python deb      # some of them ("bindings" needs "deb")
#   KVC_PACKAGING_BUILD=build/other         # the built tree to package (default build/release)
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$src}"
build="${KVC_PACKAGING_BUILD:-build/release}"
what=("$@")
((${#what[@]})) || what=(python deb bindings)

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
work="$(mktemp -d "${TMPDIR:-/tmp}/kvc-packaging.XXXXXX")"
installed_here=0
cleanup() {
  if [ "$installed_here" = 1 ] && [ -z "${KVC_PACKAGING_KEEP:-}" ]; then
    echo "ci_packaging: removing the kvc package"
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get purge -y -qq kvc >/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

timed() {
  local label="$1" t0=$SECONDS
  shift
  "$@"
  echo "ci_packaging: $label took $((SECONDS - t0)) s" >&2
}
fail() { echo "ci_packaging: FAILED: $*" >&2; exit 1; }
# Runs a command with no KVC_* variable and no LD_LIBRARY_PATH, in the scratch folder (or in
# $run_in).
clean_env() {
  local unset=(-u LD_LIBRARY_PATH -u PYTHONPATH)
  local v
  for v in $(compgen -e | grep '^KVC_' || true); do unset+=(-u "$v"); done
  (cd "${run_in:-$work}" && env "${unset[@]}" "$@")
}
model="$src/models/kjv-mini"
[ -f "$model/model.safetensors" ] || fail "$model has no weights"

# ---- 1. pip install . into a fresh venv ----------------------------------------------------------
python_job() {
  local venv="$work/venv"
  timed "venv" python3 -m venv "$venv"
  # The wheel's build reuses the release build's objects through ccache: build/python sits at
  # the same depth as build/release (pyproject.toml), and it gets the same compilers (else
  # scikit-build-core would take Python's, and ccache would hash another compiler name).
  local compilers=()
  if [ -f "$build/CMakeCache.txt" ]; then
    compilers=(CC="$(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt")"
               CXX="$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt")")
  fi
  timed "pip install ." clean_env env "${compilers[@]}" \
    "$venv/bin/pip" install --quiet --no-cache-dir "$src"
  clean_env "$venv/bin/python" - "$model" "$venv" <<'EOF'
import os, sys
import kvc
model_dir, venv = sys.argv[1], sys.argv[2]
lib = kvc.library_path()
assert os.path.realpath(lib).startswith(os.path.realpath(venv)), "libkvc not from the wheel: " + lib
assert {"streaming", "h2o"} <= {p.name for p in kvc.list_policies()}, "bundled policies missing"
with kvc.Model(model_dir, backend="cpu") as model:
    ids = model.tokenizer.encode("In the beginning God created the heaven and the earth.")
    with model.session("streaming", {"start_size": 4, "recent_size": 252}) as s:
        nll = s.score(ids)
    assert len(nll) == len(ids) - 1
    ppl = kvc.perplexity(nll)
    assert 1 < ppl < 1e4, ppl
    for bad, error in (([ids[:3], ids[3:6]], ValueError), ([1.9, 2.0], TypeError)):
        try:
            model.session().score(bad)
        except error:
            pass
        else:
            raise AssertionError("%r was accepted" % (bad,))
try:
    kvc.Model(os.path.join(model_dir, "missing"))
except FileNotFoundError as e:
    assert isinstance(e, kvc.KvcError)
else:
    raise AssertionError("a missing model folder did not raise FileNotFoundError")
print("python: kvc %s from %s: %d tokens, ppl %.3f" % (kvc.__version__, lib, len(ids), ppl))
EOF
}

# ---- 2. The Debian package -----------------------------------------------------------------------
deb_job() {
  [ -f "$build/CPackConfig.cmake" ] || fail "$build is not a configured build (run scripts/test.sh)"
  # The evaluation text is installed when it was prepared before the install.
  [ -d data/kjv/eval ] || scripts/prepare_kjv.sh data/kjv
  # (CPack warns that the policy plugins have no SONAME: they are modules, loaded by path.)
  timed "cpack" cpack --config "$build/CPackConfig.cmake" -B "$work/deb" >"$work/cpack.log" 2>&1 ||
    { cat "$work/cpack.log"; fail "cpack"; }
  local deb
  deb="$(ls "$work"/deb/kvc_*.deb)"
  echo "ci_packaging: $(basename "$deb"): $(du -h "$deb" | cut -f1)"
  dpkg-deb -I "$deb" | sed -n 's/^ \(Depends\|Version\):/  \1:/p'
  if dpkg-query -W -f='${Status}' kvc 2>/dev/null | grep -q "install ok installed"; then
    echo "ci_packaging: note: a kvc package was installed already; it is replaced and kept"
  else
    installed_here=1
  fi
  timed "apt install" env DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" \
    apt-get install -y -qq --no-install-recommends "$deb" >/dev/null
  for f in /usr/bin/kvc-eval /usr/bin/kvc-bench /usr/include/kvc/kvc.h /usr/lib/libkvc.so.1 \
      /usr/lib/pkgconfig/kvc.pc /usr/lib/cmake/kvc/kvcConfig.cmake \
      /usr/lib/kvc/policies/libkvc_policy_streaming.so /usr/share/kvc/models/kjv-mini/config.json \
      /usr/share/kvc/data/kjv/eval /usr/share/kvc/scripts/prepare_kjv.sh \
      /usr/share/kvc/configs/kjv_split.toml; do
    [ -e "$f" ] || fail "the package lacks $f"
  done
  [ "$(objdump -p /usr/lib/libkvc.so.1 | awk '$1 == "SONAME" { print $2 }')" = libkvc.so.1 ] ||
    fail "SONAME of /usr/lib/libkvc.so.1"
  [ "$(pkg-config --variable=prefix kvc)" = /usr ] || fail "kvc.pc does not name /usr"

  # The installed programs, from an unrelated folder: defaults from /usr/share/kvc.
  clean_env kvc-eval --version
  timed "installed kvc-eval" clean_env kvc-eval --mode streaming --num_eval_tokens 200 \
    --threads 2 --output_dir "$work/eval" | tail -n 1
  ls "$work"/eval/*.json >/dev/null || fail "kvc-eval wrote no JSON"
  timed "installed kvc-bench" clean_env kvc-bench --mode streaming --seq_lengths 64 \
    --num_decode_tokens 8 --warmup 0 --repetitions 1 --threads 2 --output_dir "$work/bench" \
    | tail -n 1
  ls "$work"/bench/*.json >/dev/null || fail "kvc-bench wrote no JSON"
  # A copy of the program in a prefix without share/kvc, and a HOME without data: the error
  # names every place looked at.
  mkdir -p "$work/bare/bin" "$work/home"
  cp /usr/bin/kvc-eval "$work/bare/bin/"
  local out
  if out="$(clean_env env HOME="$work/home" XDG_DATA_HOME= "$work/bare/bin/kvc-eval" \
      --mode streaming --num_eval_tokens 10 2>&1)"; then
    fail "kvc-eval ran without its defaults: $out"
  fi
  for place in "(working directory)" "$work/home/.local/share/kvc/" "$work/bare/share/kvc/" \
      "prepare_kjv.sh"; do
    [[ "$out" == *"$place"* ]] || fail "the missing-default error does not name '$place': $out"
  done
  echo "ci_packaging: a missing default lists the places looked at"

  # An out-of-tree policy: the installed SDK template with find_package(kvc) ...
  cp -r /usr/share/kvc/sdk/template "$work/template"
  cmake -S "$work/template" -B "$work/template-build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    >/dev/null
  timed "template (CMake)" cmake --build "$work/template-build" >/dev/null
  timed "kvc-eval --mode keynorm" clean_env env KVC_POLICY_PATH="$work/template-build" \
    kvc-eval --mode keynorm --num_eval_tokens 200 --threads 2 --output_dir "$work/eval" |
    tail -n 1
  # ... and the same policy with pkg-config alone, loaded by path.
  mkdir -p "$work/pc"
  # shellcheck disable=SC2046
  c++ -std=c++17 -O2 -shared -fPIC -fvisibility=hidden $(pkg-config --cflags kvc) \
    "$work/template/keynorm.cpp" -o "$work/pc/libkvc_policy_keynorm.so" \
    -Wl,--version-script="$(pkg-config --variable=policy_version_script kvc)" -Wl,--no-undefined
  clean_env kvc-eval --mode "$work/pc/libkvc_policy_keynorm.so" --num_eval_tokens 200 \
    --threads 2 --output_dir "$work/eval" | tail -n 1
  # A C program with pkg-config: the installed example, on a piece of the installed text.
  # shellcheck disable=SC2046
  cc -O2 /usr/share/kvc/examples/score_file.c -o "$work/score_file" \
    $(pkg-config --cflags --libs kvc) -lm
  head -c 3000 "$(find /usr/share/kvc/data/kjv/eval -name '*.txt' | sort | head -n 1)" \
    > "$work/text.txt"
  clean_env "$work/score_file" --policy streaming --param start_size=4 --param recent_size=60 \
    /usr/share/kvc/models/kjv-mini "$work/text.txt"
}

# ---- 3. A dependent Rust crate and Go module, against the installed package ---------------------
bindings_job() {
  [ -f /usr/lib/pkgconfig/kvc.pc ] || fail "the kvc package is not installed (run the deb job)"
  local text="In the beginning God created the heaven and the earth."
  mkdir -p "$work/rust-app/src"
  cat > "$work/rust-app/Cargo.toml" <<'EOF'
[package]
name = "kvc-app"
version = "0.1.0"
edition = "2021"

[dependencies]
kvc = { path = "/usr/share/kvc/bindings/rust/kvc" }
EOF
  cat > "$work/rust-app/src/main.rs" <<'EOF'
fn main() -> Result<(), kvc::Error> {
    let args: Vec<String> = std::env::args().collect();
    let model = kvc::Model::load(&args[1], &kvc::ModelOptions::default())?;
    let ids = model.tokenizer().expect("tokenizer.json").encode(&args[2])?;
    let opts = kvc::SessionOptions::new().policy("streaming").param("start_size", 4);
    let mut session = model.session(&opts)?;
    let nll = session.score(&ids)?;
    let ppl = (nll.iter().map(|&x| x as f64).sum::<f64>() / nll.len() as f64).exp();
    println!("rust: kvc {}: {} tokens, ppl {:.3}", kvc::version(), ids.len(), ppl);
    Ok(())
}
EOF
  timed "cargo build (dependent crate)" clean_env env CARGO_TARGET_DIR="$work/rust-target" \
    cargo build --offline --quiet --manifest-path "$work/rust-app/Cargo.toml"
  clean_env "$work/rust-target/debug/kvc-app" /usr/share/kvc/models/kjv-mini "$text"

  mkdir -p "$work/go-app"
  cat > "$work/go-app/go.mod" <<'EOF'
module example.com/kvcapp

go 1.19

require github.com/kvc-project/kvc/sdk/bindings/go/kvc v0.2.0

replace github.com/kvc-project/kvc/sdk/bindings/go/kvc => /usr/share/kvc/bindings/go/kvc
EOF
  cat > "$work/go-app/main.go" <<'EOF'
package main

import (
	"fmt"
	"math"
	"os"

	"github.com/kvc-project/kvc/sdk/bindings/go/kvc"
)

func main() {
	model, err := kvc.LoadModel(os.Args[1], nil)
	if err != nil {
		panic(err)
	}
	defer model.Close()
	ids, err := model.Tokenizer().Encode(os.Args[2])
	if err != nil {
		panic(err)
	}
	s, err := model.NewSession(&kvc.SessionOptions{Policy: "streaming",
		Params: []kvc.Param{{Name: "start_size", Value: "4"}}})
	if err != nil {
		panic(err)
	}
	defer s.Close()
	nll, err := s.Score(ids)
	if err != nil {
		panic(err)
	}
	sum := 0.0
	for _, x := range nll {
		sum += float64(x)
	}
	ppl := math.Exp(sum / float64(len(nll)))
	fmt.Printf("go: kvc %s: %d tokens, ppl %.3f\n", kvc.Version(), len(ids), ppl)
}
EOF
  run_in="$work/go-app" timed "go build (dependent module)" clean_env env \
    GOCACHE="$work/go-cache" GOPATH="$work/go-path" GOFLAGS=-mod=mod GOPROXY=off \
    GOTOOLCHAIN=local CGO_ENABLED=1 go build -o "$work/go-app/kvcapp" .
  clean_env "$work/go-app/kvcapp" /usr/share/kvc/models/kjv-mini "$text"
}

for w in "${what[@]}"; do
  case "$w" in
    python) timed "python job" python_job ;;
    deb) timed "deb job" deb_job ;;
    bindings) timed "bindings job" bindings_job ;;
    *) echo "ci_packaging: unknown job '$w' (python, deb or bindings)" >&2; exit 2 ;;
  esac
done
echo "ci_packaging: OK"
