#!/bin/sh
# check_abi.sh: fails when libkvc's C ABI changed incompatibly without a new ABI major version.
#
#   scripts/check_abi.sh [--headers DIR] [--baseline FILE] [--update|--print] LIBKVC_SO
#
# How: every function libkvc.so exports must be declared by kvc/kvc.h (DIR, default
# abi/include). A probe shared object is compiled with debug info from that header, holding one
# pointer per exported function, typed by its prototype; abidw (Debian: abigail-tools) turns it
# into an ABI description of every function signature, struct layout and enum reachable from the
# C ABI. That is compared with the committed baseline abi/libkvc.abi under the header's rules:
#   compatible (passes):   new functions; new enumerators; fields appended to a struct at or
#                          beyond its old size, if it starts with struct_size and is not an array
#                          element (kvc_param, kvc_param_info: callers index arrays of them)
#   incompatible (fails):  a removed function or a changed signature; a removed, moved, retyped or
#                          renamed field; a shrunk struct; a changed enumerator value
# unless KVC_ABI_VERSION_MAJOR is above the baseline's (then: regenerate it with --update). The
# SONAME must also end in the header's major (libkvc.so.<major>).
#
# Exit: 0 compatible, 1 incompatible, 2 usage or build error, 77 abidw/abidiff not installed.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
headers=$here/abi/include
baseline=$here/abi/libkvc.abi
update=0
lib=
while [ $# -gt 0 ]; do
  case $1 in
    --headers) headers=$2; shift 2 ;;
    --baseline) baseline=$2; shift 2 ;;
    --update) update=1; shift ;;
    --print) update=2; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "check_abi: unknown option $1" >&2; exit 2 ;;
    *) lib=$1; shift ;;
  esac
done
[ -n "$lib" ] || { echo "usage: check_abi.sh [--headers DIR] [--baseline FILE] [--update] LIBKVC_SO" >&2; exit 2; }
[ -f "$lib" ] || { echo "check_abi: no library at '$lib'" >&2; exit 2; }
[ -f "$headers/kvc/kvc.h" ] || { echo "check_abi: no kvc/kvc.h under '$headers'" >&2; exit 2; }
for tool in abidw abidiff nm; do
  command -v $tool >/dev/null 2>&1 || {
    echo "check_abi: $tool not found (Debian: apt-get install abigail-tools binutils)"; exit 77; }
done
cc=${CC:-cc}

work=$(mktemp -d "${TMPDIR:-/tmp}/kvc-abi.XXXXXX")
trap 'rm -rf "$work"' EXIT

# ---- The probe: the exported functions, typed by the header ------------------------------------
nm -D --defined-only "$lib" | awk '$2 ~ /^[TtWi]$/ { sub(/@.*/, "", $3); print $3 }' | sort -u \
  > "$work/symbols"
[ -s "$work/symbols" ] || { echo "check_abi: $lib exports no functions" >&2; exit 2; }
{
  echo '#include <kvc/kvc.h>'
  echo '#define KVC_ABI_CAT2(a, b) a##b'
  echo '#define KVC_ABI_CAT(a, b) KVC_ABI_CAT2(a, b)'
  echo 'KVC_API const int KVC_ABI_CAT(kvc_abi_probe_major_, KVC_ABI_VERSION_MAJOR) = 0;'
  while read -r sym; do
    echo "KVC_API __typeof__(&$sym) kvc_abi_probe__$sym = 0;"
  done < "$work/symbols"
} > "$work/probe.c"
if ! LC_ALL=C $cc -std=c99 -g -O0 -shared -fPIC -fvisibility=hidden -I"$headers" "$work/probe.c" \
    -o "$work/probe.so" 2> "$work/cc.log"; then
  if grep -q "'kvc_[a-z0-9_]*' undeclared" "$work/cc.log"; then
    echo "check_abi: FAILED: $lib exports functions that $headers/kvc/kvc.h does not declare:"
    grep -o "'kvc_[a-z0-9_]*' undeclared" "$work/cc.log" | sort -u | sed 's/^/  /'
    exit 1
  fi
  echo "check_abi: FAILED: the probe of $headers/kvc/kvc.h does not compile:"
  sed 's/^/  /' "$work/cc.log"
  exit 1
fi
abidw --no-corpus-path --no-comp-dir-path --no-show-locs --no-architecture --type-id-style hash \
  --out-file "$work/current.abi" "$work/probe.so"

if [ $update = 1 ]; then
  mkdir -p "$(dirname "$baseline")"
  cp "$work/current.abi" "$baseline"
  echo "check_abi: wrote $baseline ($(wc -l < "$work/symbols") functions)"
  exit 0
fi
# ---- abidw XML -> a line manifest with type names resolved ---------------------------------------
#   major N | fn NAME SIGNATURE | struct NAME BITS | member STRUCT OFFSET FIELD TYPE |
#   enumerator ENUM NAME VALUE
manifest() {
  awk '
    function attr(name,   m) {
      if (match($0, " " name "=\047[^\047]*\047")) {
        m = substr($0, RSTART + length(name) + 3, RLENGTH - length(name) - 4); return m
      }
      return ""
    }
    function rep(id,   k, s, sep) {
      if (id in seen) return "<recursive>"
      if (!(id in kind)) return "?" id
      seen[id] = 1
      if (kind[id] == "name") s = nm[id]
      else if (kind[id] == "ptr") s = rep(ref[id]) "*"
      else if (kind[id] == "const") s = "const " rep(ref[id])
      else if (kind[id] == "volatile") s = "volatile " rep(ref[id])
      else if (kind[id] == "array") s = rep(ref[id]) "[" nm[id] "]"
      else if (kind[id] == "fn") {
        s = rep(ret[id]) "("; sep = ""
        for (k = 1; k <= np[id]; k++) { s = s sep rep(par[id, k]); sep = "," }
        s = s ")"
      }
      delete seen[id]
      return s
    }
    /<type-decl / { kind[attr("id")] = "name"; nm[attr("id")] = attr("name") }
    /<typedef-decl / { kind[attr("id")] = "name"; nm[attr("id")] = attr("name") }
    /<class-decl / {
      id = attr("id"); kind[id] = "name"; nm[id] = "struct " attr("name")
      if (attr("is-declaration-only") != "yes" && $0 !~ /\/>$/) {
        cls = attr("name"); print "struct " cls " " attr("size-in-bits")
      }
    }
    /<\/class-decl>/ { cls = "" }
    /<union-decl / { kind[attr("id")] = "name"; nm[attr("id")] = "union " attr("name") }
    /<enum-decl / { id = attr("id"); kind[id] = "name"; nm[id] = "enum " attr("name"); en = attr("name") }
    /<enumerator / { print "enumerator " en " " attr("name") " " attr("value") }
    /<pointer-type-def / { kind[attr("id")] = "ptr"; ref[attr("id")] = attr("type-id") }
    /<qualified-type-def / {
      id = attr("id"); ref[id] = attr("type-id")
      kind[id] = attr("const") == "yes" ? "const" : "volatile"
    }
    /<array-type-def / {
      id = attr("id"); kind[id] = "array"; ref[id] = attr("type-id"); nm[id] = attr("size-in-bits")
    }
    /<function-type / { fid = attr("id"); kind[fid] = "fn"; np[fid] = 0 }
    /<parameter / && fid != "" { par[fid, ++np[fid]] = attr("type-id") }
    /<return / && fid != "" { ret[fid] = attr("type-id") }
    /<\/function-type>/ { fid = "" }
    /<data-member / { off = attr("layout-offset-in-bits") }
    /<var-decl / {
      if (cls != "") { pending[++npend] = cls SUBSEP off SUBSEP attr("name") SUBSEP attr("type-id") }
      else if (attr("name") ~ /^kvc_abi_probe_major_/) {
        v = attr("name"); sub(/^kvc_abi_probe_major_/, "", v); print "major " v
      } else if (attr("name") ~ /^kvc_abi_probe__/) {
        v = attr("name"); sub(/^kvc_abi_probe__/, "", v); fns[v] = attr("type-id")
      }
    }
    END {
      for (k = 1; k <= npend; k++) {
        split(pending[k], f, SUBSEP)
        print "member " f[1] " " f[2] " " f[3] " " rep(f[4])
      }
      # A probe variable is a pointer to the function type.
      for (v in fns) { t = rep(fns[v]); sub(/\*$/, "", t); print "fn " v " " t }
    }
  ' "$1" | sort
}
if [ $update = 2 ]; then  # what is compared, for people
  manifest "$work/current.abi"
  exit 0
fi
[ -f "$baseline" ] || { echo "check_abi: no baseline '$baseline' (create it with --update)" >&2; exit 2; }
manifest "$baseline" > "$work/baseline.txt"
manifest "$work/current.abi" > "$work/current.txt"

base_major=$(sed -n 's/^major //p' "$work/baseline.txt")
cur_major=$(sed -n 's/^major //p' "$work/current.txt")
[ -n "$base_major" ] && [ -n "$cur_major" ] || { echo "check_abi: no ABI major in the probe" >&2; exit 2; }

status=0
soname=$(objdump -p "$lib" 2>/dev/null | awk '$1 == "SONAME" { print $2 }')
case $soname in
  *.so."$cur_major") ;;
  *) echo "check_abi: FAILED: SONAME '$soname' does not end in .so.$cur_major (KVC_ABI_VERSION_MAJOR)"
     status=1 ;;
esac

if [ "$cur_major" -lt "$base_major" ]; then
  echo "check_abi: FAILED: KVC_ABI_VERSION_MAJOR $cur_major is below the baseline's $base_major"
  exit 1
fi
if [ "$cur_major" -gt "$base_major" ]; then
  echo "check_abi: ABI major bumped $base_major -> $cur_major: incompatible changes are allowed."
  echo "check_abi: record the new ABI with: scripts/check_abi.sh --update $lib"
  exit $status
fi

# ---- The rules -----------------------------------------------------------------------------------
# Structs that callers or the library index as arrays: their size is part of the ABI.
array_structs="kvc_param kvc_param_info"
awk -v array_structs="$array_structs" '
  FNR == 1 { file++ }
  file == 1 && $1 == "fn" { bfn[$2] = substr($0, length($1 $2) + 3) }
  file == 1 && $1 == "struct" { bsize[$2] = $3 }
  file == 1 && $1 == "member" { bmem[$2, $4] = $3 " " substr($0, length($1 $2 $3 $4) + 5) }
  file == 1 && $1 == "enumerator" { benum[$3] = $2 " " $4 }
  file == 2 && $1 == "fn" { cfn[$2] = substr($0, length($1 $2) + 3) }
  file == 2 && $1 == "struct" { csize[$2] = $3 }
  file == 2 && $1 == "member" {
    cmem[$2, $4] = $3 " " substr($0, length($1 $2 $3 $4) + 5); cmemoff[$2, $4] = $3
  }
  file == 2 && $1 == "enumerator" { cenum[$3] = $2 " " $4 }
  function bad(msg) { print "  incompatible: " msg; nbad++ }
  function ok(msg) { print "  compatible:   " msg }
  END {
    n = split(array_structs, a, " "); for (k = 1; k <= n; k++) fixed[a[k]] = 1
    for (f in bfn) {
      if (!(f in cfn)) bad("function " f " was removed")
      else if (bfn[f] != cfn[f]) bad("function " f ": " bfn[f] " became " cfn[f])
    }
    for (f in cfn) if (!(f in bfn)) ok("new function " f ": " cfn[f])
    for (s in bsize) {
      if (!(s in csize)) { bad("struct " s " is gone (or no longer reachable from a function)"); continue }
      if (csize[s] + 0 < bsize[s] + 0) bad("struct " s " shrank from " bsize[s] " to " csize[s] " bits")
      else if (csize[s] + 0 > bsize[s] + 0 && (fixed[s] || !((s, "struct_size") in bmem)))
        bad("struct " s " grew from " bsize[s] " to " csize[s] " bits, but its size is fixed (" \
            (fixed[s] ? "used in arrays" : "no struct_size") ")")
    }
    for (k in bmem) {
      split(k, p, SUBSEP)
      if (!((p[1] in csize))) continue
      if (!(k in cmem)) bad("struct " p[1] ": field " p[2] " was removed or renamed")
      else if (bmem[k] != cmem[k]) bad("struct " p[1] ": field " p[2] " at bit " bmem[k] " became at bit " cmem[k])
    }
    for (k in cmem) {
      split(k, p, SUBSEP)
      if (!(p[1] in bsize) || (k in bmem)) continue
      if (cmemoff[k] + 0 < bsize[p[1]] + 0)
        bad("struct " p[1] ": new field " p[2] " at bit " cmemoff[k] " is inside the old size " bsize[p[1]] " (fields may only be appended)")
      else ok("struct " p[1] ": field " p[2] " appended at bit " cmemoff[k])
    }
    for (e in benum) {
      if (!(e in cenum)) bad("enumerator " e " was removed")
      else if (benum[e] != cenum[e]) bad("enumerator " e ": " benum[e] " became " cenum[e])
    }
    for (e in cenum) if (!(e in benum)) ok("new enumerator " e " = " cenum[e])
    exit nbad > 0
  }
' "$work/baseline.txt" "$work/current.txt" > "$work/verdict" || status=1
sort "$work/verdict"

if [ $status != 0 ]; then
  echo "check_abi: FAILED: incompatible ABI change with KVC_ABI_VERSION_MAJOR still $cur_major."
  echo "check_abi: bump KVC_ABI_VERSION_MAJOR (the SOVERSION follows it), or keep the old ABI. abidiff says:"
  abidiff --no-added-syms "$baseline" "$work/current.abi" | sed 's/^/    /' || true
  exit 1
fi
echo "check_abi: OK: $lib is compatible with $baseline (ABI major $cur_major," \
  "$(grep -c '^fn ' "$work/current.txt") functions)"
