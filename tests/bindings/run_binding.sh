#!/bin/sh
# Runs one language binding's tests against a build tree (CTest calls this; see
# docs/bindings.md). Usage: run_binding.sh reference|c|rust|go|python
#
# Environment (set by tests/bindings/CMakeLists.txt):
#   KVC_SOURCE_DIR, KVC_BUILD_DIR   the repository and the build tree
#   KVC_TEST_REFERENCE              the reference file (written by "reference", read by the rest)
#   KVC_BINDINGS_MODEL              optional: the model to test with. Default: models/kjv-mini
#                                   when its weights exist, else a fixture without a tokenizer.
# Exit 77 means skipped (a toolchain or a model with a tokenizer is missing); the reason is
# printed.
set -eu

lang=${1:?usage: run_binding.sh reference|c|rust|go|python}
src=${KVC_SOURCE_DIR:?}
build=${KVC_BUILD_DIR:?}
ref=${KVC_TEST_REFERENCE:-$build/bindings/reference.txt}
work=$build/bindings
mkdir -p "$work"

export KVC_TEST_REFERENCE="$ref"
export KVC_LIB_DIR="$build/lib"
export KVC_LIBRARY="$build/lib/libkvc.so"
export KVC_POLICY_PATH="$build/lib/kvc/policies"
export LD_LIBRARY_PATH="$build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

skip() {
  echo "SKIPPED: $*"
  exit 77
}

need_reference() {
  [ -s "$ref" ] || { echo "no reference file $ref: run the bindings.reference test first"; exit 1; }
}

# Value of a key of the reference file.
ref_value() { sed -n "s/^$1 //p" "$ref"; }

case $lang in
reference)
  model=${KVC_BINDINGS_MODEL:-}
  if [ -z "$model" ]; then
    if [ -f "$src/models/kjv-mini/model.safetensors" ]; then
      model=$src/models/kjv-mini
    else
      model=$src/tests/fixtures/models/neox-par-r25
      echo "note: models/kjv-mini has no weights yet; using $model (no tokenizer: text cases skip)"
    fi
  fi
  "$build/bin/kvc-bindings-reference" "$model" "$src/tests/bindings/sample.txt" \
    "$src/../shared/data/gpt-neox-20b-tokenizer.json" > "$ref.tmp"
  mv "$ref.tmp" "$ref"
  sed -n 's/^\(model\|tokenizer\) /reference \1: /p' "$ref"
  ;;

c)
  need_reference
  model=$(ref_value model)
  text=$(ref_value text)
  # The error path: a missing folder fails with the library's message naming it.
  if out=$("$build/bin/score_file" /nonexistent/kvc-model-dir "$text" 2>&1); then
    echo "score_file accepted a missing model folder"; exit 1
  fi
  case $out in *"/nonexistent/kvc-model-dir"*) ;; *) echo "unexpected error: $out"; exit 1;; esac
  if [ "$(ref_value tokenizer)" != model ]; then
    skip "score_file needs a model with a tokenizer.json (models/kjv-mini); $model has none"
  fi
  "$build/bin/score_file" --policy no_such_policy "$model" "$text" 2>&1 | grep -q no_such_policy ||
    { echo "an unknown policy was not reported by name"; exit 1; }
  "$build/bin/score_file" --policy streaming --param start_size=4 --param recent_size=16 \
    "$model" "$text"
  out=$("$build/bin/score_file" "$model" "$text")
  echo "$out"
  # score_file's PPL (printed to 6 decimals) vs exp(mean NLL) of the library's text case.
  ref_value nll.text | awk -v got="$(echo "$out" | sed -n 's/^ppl //p')" '{
      s = 0; for (i = 1; i <= NF; i++) s += $i; want = exp(s / NF)
      d = got - want; if (d < 0) d = -d
      printf "reference ppl %.6f, score_file ppl %s\n", want, got
      exit !(d <= 1e-6 * want + 5e-7) }' ||
    { echo "score_file's PPL differs from the library's NLLs"; exit 1; }
  ;;

rust)
  need_reference
  cargo=${CARGO:-cargo}
  command -v "$cargo" >/dev/null 2>&1 || skip "cargo not found (Debian: apt-get install cargo rustc)"
  export CARGO_TARGET_DIR="$work/cargo-target"
  exec "$cargo" test --offline --manifest-path "$src/sdk/bindings/rust/kvc/Cargo.toml"
  ;;

go)
  need_reference
  command -v go >/dev/null 2>&1 || skip "go not found (Debian: apt-get install golang-go)"
  export GOCACHE="$work/go-cache" GOPATH="$work/go-path" GOFLAGS=-mod=mod GOPROXY=off
  export GOTOOLCHAIN=local CGO_ENABLED=1
  # cgo asks pkg-config for kvc: the build tree's kvc.pc (source headers, lib/ with a RUNPATH).
  export PKG_CONFIG_PATH="$build/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  cd "$src/sdk/bindings/go/kvc"
  exec go test -count=1 -v .
  ;;

python)
  need_reference
  # The system interpreter first (CI installs python3-pytest), then whatever python3 is first.
  python=
  for p in ${KVC_PYTHON:-} /usr/bin/python3 python3; do
    if "$p" -c "import pytest" >/dev/null 2>&1; then python=$p; break; fi
  done
  [ -n "$python" ] || skip "no python3 with pytest (Debian: apt-get install python3-pytest)"
  export PYTHONPATH="$src/sdk/bindings/python${PYTHONPATH:+:$PYTHONPATH}"
  export PYTHONDONTWRITEBYTECODE=1 KVC_EVAL="$build/bin/kvc-eval"
  exec "$python" -m pytest -p no:cacheprovider -q -rs --basetemp="$work/pytest-tmp" \
    "$src/sdk/bindings/python/tests"
  ;;

*)
  echo "unknown binding '$lang'"; exit 2 ;;
esac
