#!/bin/sh
# Proves that scripts/check_abi.sh tells compatible from incompatible changes of the C ABI.
# Usage: check_abi_test.sh SOURCE_DIR LIBKVC_SO
#
# The built library must pass against the committed baseline. Then each case edits a scratch
# copy of kvc/kvc.h (and, where functions are added or removed, builds a scratch stand-in for
# libkvc.so that exports the edited set of kvc_* symbols: the check only reads the exported
# names and the SONAME from the library) and asserts the verdict. Exit 77 (skip) without abidw.
set -eu

src=${1:?usage: check_abi_test.sh SOURCE_DIR LIBKVC_SO}
lib=${2:?usage: check_abi_test.sh SOURCE_DIR LIBKVC_SO}
check=$src/scripts/check_abi.sh
header=$src/abi/include/kvc/kvc.h
cc=${CC:-cc}

command -v abidw >/dev/null 2>&1 || { echo "SKIPPED: abidw not found (apt-get install abigail-tools)"; exit 77; }

work=$(mktemp -d "${TMPDIR:-/tmp}/kvc-abi-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
failures=0

# scratch NAME SED_SCRIPT: a copy of the header edited by sed, under $work/NAME/kvc/kvc.h.
scratch() {
  mkdir -p "$work/$1/kvc"
  sed "$2" "$header" > "$work/$1/kvc/kvc.h"
  if cmp -s "$header" "$work/$1/kvc/kvc.h"; then
    echo "test bug: the edit of case '$1' changed nothing"; exit 2
  fi
}

# stub NAME SONAME_MAJOR [+ADDED] [-REMOVED]: a library exporting the real library's kvc_*
# functions plus/minus some.
stub() {
  name=$1 major=$2; shift 2
  nm -D --defined-only "$lib" | awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }' > "$work/$name.syms"
  for edit in "$@"; do
    case $edit in
      +*) echo "${edit#+}" >> "$work/$name.syms" ;;
      -*) grep -vx "${edit#-}" "$work/$name.syms" > "$work/$name.tmp"; mv "$work/$name.tmp" "$work/$name.syms" ;;
    esac
  done
  sed 's/.*/__attribute__((visibility("default"))) void &(void) {}/' "$work/$name.syms" > "$work/$name.c"
  $cc -shared -fPIC -Wl,-soname,libkvc.so.$major "$work/$name.c" -o "$work/$name.so"
}

# expect VERDICT CASE HEADERS_DIR LIBRARY: VERDICT is pass or fail.
expect() {
  verdict=$1 name=$2 headers=$3 library=$4
  if "$check" --headers "$headers" "$library" > "$work/$name.log" 2>&1; then got=pass; else got=fail; fi
  if [ $got = "$verdict" ]; then
    echo "ok   $name: check_abi ${got}ed as expected ($(grep -m1 'incompatible:\|OK:\|bumped\|FAILED' "$work/$name.log" | sed 's/^ *//'))"
  else
    echo "FAIL $name: check_abi ${got}ed, expected $verdict. Its output:"
    sed 's/^/    /' "$work/$name.log"
    failures=$((failures + 1))
  fi
}

# 1. The build itself.
expect pass current-build "$src/abi/include" "$lib"

# 2. Incompatible changes with the same major.
scratch field-removed '/^  int32_t device; /d'
expect fail field-removed "$work/field-removed" "$lib"

scratch fields-swapped 's/^  int64_t n_tokens_seen; /  int64_t n_evictions_tmp; /; s/^  int64_t n_evictions; /  int64_t n_tokens_seen; /; s/n_evictions_tmp/n_evictions/'
expect fail fields-swapped "$work/fields-swapped" "$lib"

scratch field-retyped 's/^  int32_t n_threads;      \/\* CPU/  int64_t n_threads;      \/* CPU/'
expect fail field-retyped "$work/field-retyped" "$lib"

scratch param-retyped 's/size_t text_len, int32_t \*ids, size_t capacity, size_t \*n_ids);/int32_t text_len, int32_t *ids, size_t capacity, size_t *n_ids);/'
expect fail param-retyped "$work/param-retyped" "$lib"

scratch enum-renumbered 's/KVC_ERR_IO = 2,/KVC_ERR_IO = 12,/'
expect fail enum-renumbered "$work/enum-renumbered" "$lib"

scratch array-struct-grown 's/^  const char \*value;$/  const char *value;\n  const char *unit;/'
expect fail array-struct-grown "$work/array-struct-grown" "$lib"

scratch field-inserted-mid '/^  int64_t n_tokens_seen; /i\  int64_t n_new;'
expect fail field-inserted-mid "$work/field-inserted-mid" "$lib"

stub no-keep 1 -kvc_session_keep
scratch keep-removed '/^KVC_API kvc_status kvc_session_keep(/,/);$/d'
expect fail function-removed "$work/keep-removed" "$work/no-keep.so"

stub extra-export 1 +kvc_undeclared_extra
expect fail export-not-in-header "$src/abi/include" "$work/extra-export.so"

# 3. Compatible additions: a field appended, an enumerator and a function added.
scratch additions 's/^  int64_t kv_bytes_reserved; .*/&\n  int64_t n_resets;/; s/KVC_ERR_INTERNAL = 11/KVC_ERR_INTERNAL = 11,\n  KVC_ERR_TIMEOUT = 12/; s/^KVC_API const char \*kvc_status_name(kvc_status status);/&\nKVC_API uint32_t kvc_features(void);/'
stub with-new-function 1 +kvc_features
expect pass compatible-additions "$work/additions" "$work/with-new-function.so"

# 4. The incompatible change with the major bumped (and the SONAME with it) passes; a bumped
#    major with the old SONAME does not.
scratch bumped '/^  int32_t device; /d; s/^#define KVC_ABI_VERSION_MAJOR 1$/#define KVC_ABI_VERSION_MAJOR 2/'
stub soname2 2
expect pass field-removed-major-bumped "$work/bumped" "$work/soname2.so"
expect fail major-bumped-soname-not "$work/bumped" "$lib"

if [ $failures -gt 0 ]; then
  echo "$failures case(s) failed"
  exit 1
fi
echo "all cases behaved as expected"
