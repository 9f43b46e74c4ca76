#!/usr/bin/env bash
# Ray CI job (docs/scale-out.md): the Ray driver (python -m kvc.ray_eval, kvc-ray-eval) on a
# local multi-node Ray cluster, against one kvc-eval process.
#  1. a fresh venv with `pip install .` (libkvc inside the wheel, built with ccache as in
#     scripts/ci_packaging.sh) and `ray` from PyPI;
#  2. a Ray cluster on the loopback interface: a head with no CPU and two worker nodes with one
#     CPU each, every one a `ray start --block` process of this script;
#  3. a short evaluation of the embedded model (--mode all, three small texts, 300 tokens per
#     method, small caches so that every policy evicts) by one kvc-eval process and by the
#     driver on the cluster: the result JSONs are equal except timing, output folder and
#     merged_from (NLL sums bit-identical), and the table and figures are the same;
#  4. the same twice more while a process dies mid-run (SIGKILL after a worker's first item,
#     while it serves its second): once a `kvc-eval --worker` process, once the Ray worker
#     process of an actor. The lost item is retried, the results are still identical, and the
#     staging folder holds exactly one result per shard (nothing counted twice).
# The cluster is stopped at the end, also on failure.
#
# Ray turns 127.0.0.1 into the machine's outward address (it assumes other nodes must reach
# it), so the nodes use 127.0.0.2: still the loopback interface, no traffic leaves the machine.
#
#   scripts/ci_ray.sh                  # needs build/release (scripts/test.sh)
#   KVC_RAY_BUILD=build/other          # the built tree whose kvc-eval is used
#   KVC_RAY_KEEP=1                     # keep the scratch folder (venv, outputs, node logs)
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$src}"
build="${KVC_RAY_BUILD:-build/release}"
kvc_eval="$src/$build/bin/kvc-eval"
[ -x "$kvc_eval" ] || { echo "ci_ray: $kvc_eval not built (run scripts/test.sh)" >&2; exit 1; }
[ -d data/kjv/eval ] || scripts/prepare_kjv.sh data/kjv

work="$(mktemp -d "${TMPDIR:-/tmp}/kvc-ray.XXXXXX")"
ip=127.0.0.2
nodes=()
# A local test cluster: no token, no usage report, no dashboard.
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
cleanup() {
  local rc=$? pid t
  if ((${#nodes[@]})); then
    echo "ci_ray: stopping the cluster"
    kill -TERM "${nodes[@]}" 2>/dev/null || true
    # `ray start --block` stops its node's processes on SIGTERM (a drain of a second or two).
    for t in $(seq 1 60); do
      for pid in "${nodes[@]}"; do kill -0 "$pid" 2>/dev/null && break; pid=; done
      [ -z "$pid" ] && break
      sleep 0.5
    done
    for pid in "${nodes[@]}"; do
      if kill -0 "$pid" 2>/dev/null; then
        echo "ci_ray: node process $pid did not stop; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done
  fi
  if [ "$rc" != 0 ] && [ -d "$work" ]; then
    for f in "$work"/*.err "$work"/node-*.log; do
      [ -f "$f" ] && { echo "---- $f (last lines)"; tail -n 25 "$f"; }
    done
  fi
  if [ -n "${KVC_RAY_KEEP:-}" ]; then echo "ci_ray: kept $work"; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "ci_ray: FAILED: $*" >&2; exit 1; }
timed() {
  local label="$1" t0=$SECONDS
  shift
  "$@"
  echo "ci_ray: $label took $((SECONDS - t0)) s" >&2
}

# ---- 1. The package and Ray in a fresh venv -------------------------------------------------------
venv="$work/venv"
python3 -m venv "$venv"
compilers=()
if [ -f "$build/CMakeCache.txt" ]; then
  compilers=(CC="$(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt")"
             CXX="$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt")")
fi
timed "pip install . ray" env "${compilers[@]}" \
  "$venv/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check "$src" ray
[ -x "$venv/bin/kvc-ray-eval" ] || fail "the kvc-ray-eval entry point is not installed"
"$venv/bin/python" -c "import ray, kvc.ray_eval; print('ci_ray: ray', ray.__version__)"

# ---- 2. The cluster: a head and two worker nodes on the loopback interface ---------------------
port="$("$venv/bin/python" -c "import socket; s = socket.socket(); s.bind(('$ip', 0)); print(s.getsockname()[1])")"
ray_start() {  # name, arguments
  local name="$1"
  shift
  "$venv/bin/ray" start --block --node-ip-address "$ip" --object-store-memory 80000000 \
    --disable-usage-stats "$@" >"$work/node-$name.log" 2>&1 &
  nodes+=($!)
}
cluster_cpus() {
  "$venv/bin/ray" status --address "$ip:$port" 2>/dev/null |
    sed -n 's|^ *[0-9.]*/\([0-9.]*\) CPU.*|\1|p' | head -n 1
}
t0=$SECONDS
ray_start head --head --port "$port" --num-cpus 0 --include-dashboard false --temp-dir "$work/ray-session"
until "$venv/bin/ray" status --address "$ip:$port" >/dev/null 2>&1; do
  ((SECONDS - t0 < 120)) || fail "the head did not start (see node-head.log)"
  kill -0 "${nodes[0]}" 2>/dev/null || fail "the head exited: $(tail -n 5 "$work/node-head.log")"
  sleep 1
done
# One after the other: nodes starting together on one host may pick the same free port.
for n in 1 2; do
  for attempt in 1 2; do
    ray_start "worker$n" --address "$ip:$port" --num-cpus 1
    until [ "$(cluster_cpus)" = "$n.0" ]; do
      kill -0 "${nodes[-1]}" 2>/dev/null || break
      ((SECONDS - t0 < 180)) || fail "worker node $n did not join: $(tail -n 5 "$work/node-worker$n.log")"
      sleep 1
    done
    [ "$(cluster_cpus)" = "$n.0" ] && break
    echo "ci_ray: worker node $n failed to start: $(grep -m 1 -i "exception\|error" "$work/node-worker$n.log" || true)" >&2
    unset 'nodes[-1]'
    [ "$attempt" = 1 ] || fail "worker node $n did not start twice"
  done
done
echo "ci_ray: cluster at $ip:$port: a head and two worker nodes of 1 CPU ($((SECONDS - t0)) s)"

# ---- 3. One kvc-eval process against the driver on the cluster -----------------------------------
mkdir -p "$work/data"
for book in 59_James 63_2John 65_Jude; do
  head -c 420 "data/kjv/eval/$book.txt" >"$work/data/$book.txt"
done
flags=(--mode all --num_eval_tokens 300 --data_dir data --threads 1 --start_size 2
       --recent_size 6 --heavy_size 4 --separator_size 2 --local_size 6 --cache_size 20)
cd "$work"
single() { "$kvc_eval" "${flags[@]}" --output_dir single >single.out 2>single.err; }
timed "kvc-eval (one process)" single || fail "kvc-eval: $(tail -n 5 single.err)"
items="$("$kvc_eval" "${flags[@]}" --list_items | "$venv/bin/python" -c "import json, sys; print(json.load(sys.stdin)['count'])")"
echo "ci_ray: $items work items"

# Compares an output folder with the single run's: the same files; JSON equal but for timing,
# the output folder and merged_from, and bit-identical NLL sums; the table without its Tokens/s
# column; the figures byte for byte. Then the staging folder: one manifest and one result file
# per (shard, run), nothing twice.
check() {  # output folder, staging folder
  "$venv/bin/python" - "$work/single" "$1" "$2" "$items" <<'EOF'
import json, os, re, sys
single, merged, staging, k = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def comparable(j):
    for key in ("tokens_per_sec", "wall_time_s", "merged_from"):
        j.pop(key, None)
    j["settings"]["eval"].pop("output_dir", None)
    return j
def table(path):
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in open(path) if line.startswith("|")]
    drop = rows[0].index("Tokens/s")
    return [r[:drop] + r[drop + 1:] for r in rows]
names = sorted(os.listdir(single))
other = sorted(os.listdir(merged))
assert names == other, "only in the single run: %s; only in %s: %s" % (
    sorted(set(names) - set(other)), merged, sorted(set(other) - set(names)))
runs = 0
for name in names:
    a_path, b_path = os.path.join(single, name), os.path.join(merged, name)
    if name.endswith(".json"):
        a, b = json.load(open(a_path)), json.load(open(b_path))
        sa = sum(f["nll_sum"] for f in a["files"])
        sb = sum(f["nll_sum"] for f in b["files"])
        assert sa == sb, "%s: NLL sums %r and %r" % (name, sa, sb)
        assert a["num_tokens"] == b["num_tokens"] and a["num_samples"] == b["num_samples"], name
        assert comparable(a) == comparable(b), name + " differs"
        runs += 1
    elif name.endswith(".md"):
        assert table(a_path) == table(b_path), name + " differs"
    else:
        assert open(a_path, "rb").read() == open(b_path, "rb").read(), name + " differs"
manifests = [n for n in os.listdir(staging) if re.fullmatch(r"shard-\d+-of-\d+\.json", n)]
assert sorted(manifests) == sorted("shard-%d-of-%d.json" % (i, k) for i in range(k)), manifests
results = [n for n in os.listdir(staging) if n.startswith("ppl_results_")]
assert len(results) == k, "%d shard results for %d items" % (len(results), k)
print("ci_ray: %s equals the single run (%d result files, %d shards)" % (merged, runs, k))
EOF
}

driver() {  # name, extra arguments...
  local name="$1"
  shift
  "$venv/bin/kvc-ray-eval" --address "$ip:$port" --kvc_eval "$kvc_eval" \
    --output_dir "$name" --staging_dir "staging-$name" "$@" "${flags[@]}" >"$name.out" 2>"$name.err" ||
    fail "the driver ($name): $(tail -n 15 "$name.err")"
  grep -q "done: $items items on 2 workers" "$name.err" || fail "$name: not 2 workers: $(tail -n 3 "$name.err")"
}

timed "driver on the cluster" driver cluster
check cluster staging-cluster

# ---- 4. A process killed mid-run --------------------------------------------------------------
for fault in kill-worker kill-actor; do
  rm -f "$work/fault-mark"
  KVC_RAY_EVAL_FAULT="$fault $work/fault-mark" timed "driver, $fault" driver "$fault"
  [ -f "$work/fault-mark" ] || fail "$fault: the fault was not injected"
  grep -q "retrying" "$fault.err" || fail "$fault: no item was retried: $(cat "$fault.err")"
  grep "retrying" "$fault.err" | cut -c1-160
  check "$fault" "staging-$fault"
done
# No kvc-eval worker is left behind (the killed actor's worker died with it).
sleep 1
if pgrep -f -- "$kvc_eval .*--worker" >/dev/null; then
  fail "kvc-eval --worker processes are left: $(pgrep -af -- "$kvc_eval .*--worker")"
fi
echo "ci_ray: OK"
