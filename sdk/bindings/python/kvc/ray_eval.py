"""kvc-ray-eval: kvc-eval's work spread over a Ray cluster (docs/scale-out.md).

::

    python -m kvc.ray_eval [--address auto|HOST:PORT] [--num_workers N] [--cpus_per_worker C]
                           [--gpus_per_worker G] [--kvc_eval PATH] [--output_dir DIR]
                           KVC-EVAL FLAGS...

1. ``kvc-eval FLAGS --list_items`` (as a Ray task) gives the K work items (mode x file).
2. N Ray actors each start one ``kvc-eval FLAGS --worker`` process in a private temporary folder:
   the model and the texts are loaded once per actor.
3. Each item is shard ``i/K`` of a split into K shards (kvc-eval gives every item its own shard,
   largest first), submitted as an actor task; the actor writes ``i/K`` to its worker, waits for
   ``done i/K`` and returns the shard's files as bytes (no shared file system is needed).
4. An item whose actor or worker process died is submitted again (on another actor when one is
   free; Ray restarts the dead actor). Results are kept by shard index, so an item is never
   counted twice, and ``kvc-eval --merge`` refuses duplicated shards anyway.
5. The shard files are written to a staging folder and ``kvc-eval FLAGS --merge STAGING
   --output_dir DIR`` writes exactly the files a single ``kvc-eval FLAGS`` run writes.

Every argument that is not one of the driver's own is passed to kvc-eval unchanged (``--mode``,
``--config``, ...). Paths in them are taken relative to the driver's working directory, on every
node (use absolute paths, or the same layout on every node). Ray is optional: only this module
needs it (``pip install 'ray[default]'``, or the package's extra: ``pip install '.[ray]'``).
Only ``--task ppl`` (the default) is split into work items; the other tasks run in one kvc-eval.
"""

from __future__ import annotations

import collections
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

PROGRAM = "kvc-ray-eval"

# Flags of kvc-eval that the driver sets itself.
_RESERVED = ("--shard", "--worker", "--merge", "--list_items")

_HELP = """\
usage: kvc-ray-eval [--address auto|HOST:PORT] [--num_workers N] [--cpus_per_worker C]
                    [--gpus_per_worker G] [--kvc_eval PATH] [--output_dir DIR]
                    [--staging_dir DIR] [--max_retries R] [--max_restarts R]
                    KVC-EVAL FLAGS...

Runs kvc-eval's work items (mode x file) as Ray tasks on actors that each keep one
`kvc-eval --worker` process (the model loaded once per actor), retries items whose worker
died, and merges the shards into exactly the files a single kvc-eval run writes
(docs/scale-out.md).

driver options:
  --address A          'auto' (the running cluster), a head's HOST:PORT or ray://HOST:PORT;
                       default: start a local Ray for this run
  --num_workers N      actors (default: as many as the cluster's CPUs/GPUs allow, at most
                       one per work item)
  --cpus_per_worker C  CPUs per actor (default 1); kvc-eval gets --threads C unless the
                       flags give --threads
  --gpus_per_worker G  GPUs per actor (default 0); Ray sets CUDA_VISIBLE_DEVICES
  --kvc_eval PATH      the kvc-eval program (default: $KVC_EVAL, else kvc-eval on PATH, else
                       next to the package or in the source tree's build/release/bin)
  --output_dir DIR     where the merged results go (passed to the merge; default: kvc-eval's)
  --staging_dir DIR    keep the shard files there (an empty or new folder); default: a
                       temporary folder, removed at the end
  --max_retries R      attempts per item after the first, when its worker died (default 3)
  --max_restarts R     restarts of a dead actor (default 3)
  -h, --help           this help

Every other argument goes to kvc-eval unchanged (see `kvc-eval --help`); --shard, --worker,
--merge and --list_items are the driver's own. Only --task ppl (the default) is split: the
other tasks run in one kvc-eval process.
"""


class UsageError(Exception):
    """A bad command line (exit status 2)."""


class DriverError(Exception):
    """A failure of the run (exit status 1)."""


class WorkerDied(RuntimeError):
    """The kvc-eval --worker process of an actor exited before answering: the item is retried."""


class ShardFailed(RuntimeError):
    """kvc-eval answered "error I/N: message": the same input fails again, nothing is retried."""


# ---- command line -----------------------------------------------------------------------------

_OPTIONS = {
    # name: (converter, default)
    "address": (str, None),
    "num_workers": (int, None),
    "cpus_per_worker": (float, 1.0),
    "gpus_per_worker": (float, 0.0),
    "kvc_eval": (str, None),
    "output_dir": (str, None),
    "staging_dir": (str, None),
    "max_retries": (int, 3),
    "max_restarts": (int, 3),
}


def parse_args(argv: Sequence[str]) -> Tuple[Dict[str, Any], List[str]]:
    """Splits the command line into the driver's options and kvc-eval's arguments (in order,
    unchanged). A driver option given twice is an error, as in kvc-eval."""
    opts: Dict[str, Any] = {name: default for name, (_, default) in _OPTIONS.items()}
    given = set()
    rest: List[str] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            opts["help"] = True
            i += 1
            continue
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if name in _OPTIONS:
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError("--%s needs a value" % name)
                value = argv[i + 1]
                i += 1
            if name in given:
                raise UsageError("--%s is given twice" % name)
            given.add(name)
            converter = _OPTIONS[name][0]
            try:
                opts[name] = converter(value)
            except ValueError:
                raise UsageError("--%s: '%s' is not a %s" % (name, value, converter.__name__))
            i += 1
            continue
        if name in (r[2:] for r in _RESERVED):
            raise UsageError("%s is set by the driver (it runs --list_items, --worker, one "
                             "--shard per item and --merge itself)" % arg.split("=")[0])
        if name == "task":
            task = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            if task and task != "ppl":  # a missing value is kvc-eval's usage error
                raise UsageError(_not_shardable(task))
        rest.append(arg)
        i += 1
    if opts["num_workers"] is not None and opts["num_workers"] < 1:
        raise UsageError("--num_workers must be at least 1")
    if opts["cpus_per_worker"] < 0 or opts["gpus_per_worker"] < 0:
        raise UsageError("--cpus_per_worker and --gpus_per_worker must not be negative")
    if opts["cpus_per_worker"] == 0 and opts["gpus_per_worker"] == 0:
        raise UsageError("a worker needs some CPUs or GPUs (--cpus_per_worker, --gpus_per_worker)")
    if opts["max_retries"] < 0 or opts["max_restarts"] < 0:
        raise UsageError("--max_retries and --max_restarts must not be negative")
    return opts, rest


# kvc-eval's refusal of --list_items with another task (hosts/eval/eval_main.cpp).
_TASK_REFUSED = re.compile(r"applies to --task ppl; the (\S+) task runs in one process")


def _not_shardable(task: str) -> str:
    return ("--task %s: only --task ppl is split into work items; the %s task runs in one "
            "process: run kvc-eval itself" % (task, task))


def _has_flag(args: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def find_kvc_eval(explicit: Optional[str] = None) -> str:
    """The kvc-eval program: ``explicit``, else $KVC_EVAL, else kvc-eval on PATH, else next to
    the package (an installed prefix's bin/) or in the source tree's build/release/bin."""
    if explicit:
        path = os.path.abspath(os.path.expanduser(explicit))
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise UsageError("--kvc_eval: '%s' is not an executable file" % explicit)
        return path
    tried = []
    env = os.environ.get("KVC_EVAL")
    if env:
        tried.append(env + " ($KVC_EVAL)")
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return os.path.abspath(env)
    on_path = shutil.which("kvc-eval")
    if on_path:
        return os.path.abspath(on_path)
    tried.append("kvc-eval on PATH")
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [
        os.path.join(here, "bin", "kvc-eval"),
        os.path.join(sys.prefix, "bin", "kvc-eval"),
        os.path.join(os.path.dirname(sys.executable), "kvc-eval"),
        # sdk/bindings/python/kvc in a source tree
        os.path.normpath(os.path.join(here, "..", "..", "..", "..", "build", "release", "bin",
                                      "kvc-eval")),
    ]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
        tried.append(c)
    raise UsageError("kvc-eval not found; looked at: " + "; ".join(tried) +
                     ". Install kvc (docs/install.md) or give --kvc_eval PATH")


def assign_shards(tokens: Sequence[int], n_shards: int) -> List[int]:
    """kvc-eval's split (hosts/eval/shards.h): items by size, largest first (stable), each to
    the shard with the fewest tokens so far, the lowest index on ties."""
    order = sorted(range(len(tokens)), key=lambda i: -tokens[i])  # sorted() is stable
    load = [0] * n_shards
    shard = [0] * len(tokens)
    for i in order:
        lightest = min(range(n_shards), key=lambda s: (load[s], s))
        shard[i] = lightest
        load[lightest] += tokens[i]
    return shard


def _forwarded_env() -> Dict[str, str]:
    """The driver's KVC_* variables (policy path, library), for kvc-eval on every node."""
    return {k: v for k, v in os.environ.items() if k.startswith("KVC_")}


def _log(message: str) -> None:
    sys.stderr.write("%s: %s\n" % (PROGRAM, message))
    sys.stderr.flush()


# ---- on the nodes -----------------------------------------------------------------------------

def _program_on_node(kvc_eval: str) -> str:
    if os.path.isfile(kvc_eval) and os.access(kvc_eval, os.X_OK):
        return kvc_eval
    found = shutil.which("kvc-eval")
    if found:
        return found
    raise FileNotFoundError("%s: kvc-eval is neither at %s nor on PATH on node %s" %
                            (PROGRAM, kvc_eval, socket.gethostname()))


def _cwd_on_node(cwd: str, fallback: str) -> str:
    return cwd if os.path.isdir(cwd) else fallback


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the actor's process dies (Linux), so that a
    killed actor never leaves a kvc-eval worker behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: the worker still ends when its stdin closes
        pass


_FOLDER_PREFIX = "kvc-ray-worker-"


def _remove_stale_folders() -> None:
    """Removes the folders of actors that died without cleaning up (killed, or the run
    interrupted): kvc-ray-worker-PID-* whose process is gone."""
    tmp = tempfile.gettempdir()
    try:
        names = os.listdir(tmp)
    except OSError:
        return
    for name in names:
        if not name.startswith(_FOLDER_PREFIX):
            continue
        pid_text = name[len(_FOLDER_PREFIX):].split("-")[0]
        if not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
        except OSError:
            pass


def list_items(kvc_eval: str, args: List[str], cwd: str, env: Dict[str, str]):
    """``kvc-eval ARGS --list_items`` on a node: (exit status, stdout, stderr)."""
    program = _program_on_node(kvc_eval)
    full_env = dict(os.environ)
    full_env.update(env)
    p = subprocess.run([program] + list(args) + ["--list_items"], cwd=_cwd_on_node(cwd, "/"),
                       env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


class ShardWorker:
    """A Ray actor (ray.remote(ShardWorker)): one ``kvc-eval ARGS --worker`` process, kept for
    the actor's life, with its output in a private temporary folder."""

    def __init__(self, kvc_eval: str, args: List[str], cwd: str, env: Dict[str, str]):
        self._program = _program_on_node(kvc_eval)
        self._args = list(args)
        self._env = dict(env)
        _remove_stale_folders()
        self._dir = tempfile.mkdtemp(prefix="%s%d-" % (_FOLDER_PREFIX, os.getpid()))
        self._cwd = _cwd_on_node(cwd, self._dir)
        self._out = os.path.join(self._dir, "out")
        self._proc: Optional[subprocess.Popen] = None
        self._pid: Optional[int] = None
        self._log_path = os.path.join(self._dir, "worker.log")
        self._served = 0
        self._start()

    def _start(self) -> None:
        if os.path.isdir(self._out):
            shutil.rmtree(self._out)
        os.makedirs(self._out)
        env = dict(os.environ)
        env.update(self._env)
        with open(self._log_path, "ab") as log:
            # Its own session: a Ctrl-C in the driver's terminal does not reach it; the driver
            # ends it by ending the actor (PDEATHSIG) or closing its stdin.
            self._proc = subprocess.Popen(
                [self._program] + self._args + ["--worker", "--output_dir", self._out],
                cwd=self._cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, preexec_fn=_die_with_parent, start_new_session=True)
        self._pid = self._proc.pid

    def info(self) -> Dict[str, Any]:
        return {"node": socket.gethostname(), "actor_pid": os.getpid(),
                "worker_pid": self._proc.pid if self._proc else None, "dir": self._dir}

    def _log_tail(self, lines: int = 8) -> str:
        try:
            with open(self._log_path, "rb") as f:
                text = f.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def _died(self, spec: str) -> WorkerDied:
        rc = self._proc.wait() if self._proc else None
        tail = self._log_tail()
        self._proc = None
        how = ("killed by signal %d" % -rc) if rc is not None and rc < 0 else "status %s" % rc
        return WorkerDied("kvc-eval --worker (pid %s on %s) ended during shard %s (%s)%s" %
                          (self._pid, socket.gethostname(), spec, how,
                           ("; its last output:\n" + tail) if tail else ""))

    def _inject_fault(self) -> None:
        """Tests only (scripts/ci_ray.sh): KVC_RAY_EVAL_FAULT="kill-worker MARK" or
        "kill-actor MARK" kills, with SIGKILL, this actor's kvc-eval worker or this actor's own
        process while it serves its second item, once in the whole run (the first actor to
        create the file MARK)."""
        fault = self._env.get("KVC_RAY_EVAL_FAULT", "")
        if not fault or self._served != 1:
            return
        what, _, mark = fault.partition(" ")
        try:
            os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except OSError:
            return  # another actor did it already
        if what == "kill-worker":
            os.kill(self._proc.pid, signal.SIGKILL)
        elif what == "kill-actor":
            os.kill(os.getpid(), signal.SIGKILL)

    def run(self, index: int, count: int) -> Dict[str, Any]:
        """Runs shard index/count and returns {"index", "files": {name: bytes}, ...}."""
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        spec = "%d/%d" % (index, count)
        t0 = time.monotonic()
        try:
            self._proc.stdin.write((spec + "\n").encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died(spec)
        self._inject_fault()
        while True:
            line = self._proc.stdout.readline()
            if not line:
                raise self._died(spec)
            text = line.decode("utf-8", "replace").rstrip("\n")
            if text == "done " + spec:
                break
            if text.startswith("error " + spec + ": "):
                raise ShardFailed(text[len("error " + spec + ": "):])
            # anything else is a result line of the run (the worker's stdout)
        suffix = ".shard-%d-of-%d." % (index, count)
        manifest = "shard-%d-of-%d.json" % (index, count)
        files = {}
        for name in sorted(os.listdir(self._out)):
            if suffix in name or name == manifest:
                path = os.path.join(self._out, name)
                with open(path, "rb") as f:
                    files[name] = f.read()
                os.remove(path)
        if manifest not in files:
            raise ShardFailed("kvc-eval answered 'done %s' but wrote no %s" % (spec, manifest))
        self._served += 1
        return {"index": index, "files": files, "seconds": time.monotonic() - t0,
                "node": socket.gethostname(), "worker_pid": self._proc.pid}

    def close(self) -> None:
        """Ends the worker (its stdin closes: it exits) and removes the temporary folder."""
        if self._proc is not None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=30)
            except Exception:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        shutil.rmtree(self._dir, ignore_errors=True)


# ---- the driver -------------------------------------------------------------------------------

def _import_ray():
    try:
        import ray  # noqa: F401
    except ImportError:
        raise DriverError("Ray is not installed; only this driver needs it: pip install "
                          "'ray[default]' (or install kvc with its extra: pip install '.[ray]' "
                          "in the source tree)")
    return ray


def _cause(error: BaseException) -> BaseException:
    """The exception an actor raised, out of Ray's wrapper."""
    return getattr(error, "cause", None) or error


def _worker_count(ray, opts: Dict[str, Any], n_items: int) -> int:
    resources = ray.cluster_resources()
    fit = None
    for key, per in (("CPU", opts["cpus_per_worker"]), ("GPU", opts["gpus_per_worker"])):
        if per > 0:
            n = int(resources.get(key, 0) // per)
            fit = n if fit is None else min(fit, n)
    fit = fit or 0
    wanted = opts["num_workers"]
    if wanted is None:
        if fit == 0:
            raise DriverError("the cluster has no room for a worker of %g CPUs and %g GPUs "
                              "(it has %g CPUs, %g GPUs)" %
                              (opts["cpus_per_worker"], opts["gpus_per_worker"],
                               resources.get("CPU", 0), resources.get("GPU", 0)))
        wanted = fit
    elif wanted > fit:
        _log("warning: %d workers of %g CPUs and %g GPUs asked for, the cluster has room for %d "
             "now; the others start when resources appear" %
             (wanted, opts["cpus_per_worker"], opts["gpus_per_worker"], fit))
    return max(1, min(wanted, n_items))


def _write_staging(staging: str, results: Dict[int, Dict[str, Any]]) -> None:
    for index in sorted(results):
        for name, data in results[index]["files"].items():
            if os.path.basename(name) != name or name.startswith("."):
                raise DriverError("a worker returned a file named '%s'" % name)
            path = os.path.join(staging, name)
            if os.path.exists(path):
                raise DriverError("two results of shard %d write %s" % (index, name))
            with open(path, "wb") as f:
                f.write(data)


class _Interrupted(Exception):
    pass


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


def run(opts: Dict[str, Any], eval_args: List[str]) -> int:
    t_start = time.monotonic()
    kvc_eval = find_kvc_eval(opts["kvc_eval"])
    ray = _import_ray()
    staging_given = opts["staging_dir"] is not None
    if staging_given:
        staging = os.path.abspath(opts["staging_dir"])
        if os.path.isdir(staging) and os.listdir(staging):
            raise UsageError("--staging_dir: '%s' is not empty" % opts["staging_dir"])
    cwd = os.getcwd()
    env = _forwarded_env()
    worker_args = list(eval_args)
    if not _has_flag(eval_args, "--threads") and opts["cpus_per_worker"] >= 1:
        worker_args += ["--threads", str(int(opts["cpus_per_worker"]))]

    started_ray = False
    merging = False
    actors: List[Any] = []
    in_flight: Dict[Any, Tuple[int, int]] = {}
    try:
        if opts["address"]:
            ray.init(address=opts["address"], logging_level="warning",
                     log_to_driver=False)
        else:
            ray.init(address="local", include_dashboard=False, logging_level="warning",
                     log_to_driver=False)
            started_ray = True

        # 1. The work items, listed where a worker would run (the model is there).
        t0 = time.monotonic()
        lister = ray.remote(list_items).options(num_cpus=opts["cpus_per_worker"],
                                                num_gpus=opts["gpus_per_worker"],
                                                max_retries=opts["max_retries"])
        rc, out, err = ray.get(lister.remote(kvc_eval, eval_args, cwd, env))
        if rc != 0:
            task = _TASK_REFUSED.search(err)
            if task:  # a config's [eval] task
                raise UsageError(_not_shardable(task.group(1)))
            sys.stderr.write(err)
            raise _ExitStatus(rc)
        listing = json.loads(out)
        items = listing["items"]
        k = int(listing["count"])
        if k == 0:
            raise DriverError("kvc-eval lists no work item (nothing to score)")
        shard_of = assign_shards([int(it["tokens"]) for it in items], k)
        item_of = {s: items[i] for i, s in enumerate(shard_of)}
        total_tokens = sum(int(it["tokens"]) for it in items)
        t_list = time.monotonic() - t0

        # 2. The actors, each with one kvc-eval --worker.
        n = _worker_count(ray, opts, k)
        actor_class = ray.remote(ShardWorker).options(
            num_cpus=opts["cpus_per_worker"], num_gpus=opts["gpus_per_worker"],
            max_restarts=opts["max_restarts"], max_task_retries=0)
        actors = [actor_class.remote(kvc_eval, worker_args, cwd, env) for _ in range(n)]
        _log("%d work items (%d tokens), %d workers of %g CPUs, %g GPUs; kvc-eval %s" %
             (k, total_tokens, n, opts["cpus_per_worker"], opts["gpus_per_worker"], kvc_eval))

        # 3. One shard per item; the largest first (shard 0 is the largest item).
        pending = collections.deque(range(k))
        idle = collections.deque(range(n))
        results: Dict[int, Dict[str, Any]] = {}
        attempts = collections.Counter()
        actor_failures = collections.Counter()
        dead = set()
        tokens_done = 0
        t_score = time.monotonic()
        while len(results) < k:
            while pending and idle:
                a = idle.popleft()
                i = pending.popleft()
                in_flight[actors[a].run.remote(i, k)] = (a, i)
            if not in_flight:
                raise DriverError("no worker is left (each died more than --max_restarts "
                                  "times); %d of %d items done" % (len(results), k))
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                a, i = in_flight.pop(ref)
                item = item_of[i]
                what = "%s %s" % (item["run"], item["file"] or "(all files)")
                try:
                    result = ray.get(ref)
                except Exception as e:  # a dead worker or actor, or a failed shard
                    cause = _cause(e)
                    if isinstance(cause, ShardFailed):
                        raise DriverError("shard %d/%d (%s) failed: %s" % (i, k, what, cause))
                    attempts[i] += 1
                    actor_failures[a] += 1
                    first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
                    if attempts[i] > opts["max_retries"]:
                        raise DriverError("shard %d/%d (%s) failed %d times; last: %s" %
                                          (i, k, what, attempts[i], cause))
                    _log("worker %d lost shard %d/%d (%s): %s; retrying" %
                         (a, i, k, what, type(cause).__name__ + (": " + first_line
                                                                 if first_line else "")))
                    pending.appendleft(i)
                    if actor_failures[a] > opts["max_restarts"]:
                        dead.add(a)
                        _log("worker %d died %d times: not used any more" %
                             (a, actor_failures[a]))
                    else:
                        idle.append(a)  # behind the others: a retry goes to another first
                    continue
                idle.append(a)
                if i in results:  # never counted twice
                    continue
                results[i] = result
                tokens_done += int(item["tokens"])
                _log("[%d/%d items, %d/%d tokens, %.1f s] shard %d: %s, %s tokens, %.2f s on "
                     "worker %d (%s)" % (len(results), k, tokens_done, total_tokens,
                                         time.monotonic() - t_start, i, what, item["tokens"],
                                         result["seconds"], a, result["node"]))
        t_score = time.monotonic() - t_score

        # The actors are done: their workers end and their folders go.
        for a, actor in enumerate(actors):
            if a not in dead:
                try:
                    ray.get(actor.close.remote(), timeout=60)
                except Exception:
                    pass
                ray.kill(actor)
        actors = []

        # 4. Staging, then the merge: the outputs of a single run.
        if not staging_given:
            staging = tempfile.mkdtemp(prefix="kvc-ray-eval-")
        else:
            os.makedirs(staging, exist_ok=True)
        try:
            _write_staging(staging, results)
            t0 = time.monotonic()
            merge = [kvc_eval] + eval_args + ["--merge", staging]
            if opts["output_dir"] is not None:
                merge += ["--output_dir", opts["output_dir"]]
            merging = True
            rc = _run_to_end(merge)
            t_merge = time.monotonic() - t0
        finally:
            if not staging_given:
                shutil.rmtree(staging, ignore_errors=True)
        if rc != 0:
            raise DriverError("kvc-eval --merge failed with status %d" % rc)
        _log("done: %d items on %d workers in %.1f s (list %.1f s, scoring %.1f s, merge %.1f "
             "s)" % (k, n, time.monotonic() - t_start, t_list, t_score, t_merge))
        return 0
    except KeyboardInterrupt:
        if merging:
            _log("interrupted after the merge had finished")
        else:
            _log("interrupted: the workers are stopped; nothing was written to the output "
                 "folder")
        return 130
    finally:
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        if started_ray:
            try:
                ray.shutdown()
            except Exception:
                pass


class _ExitStatus(Exception):
    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


def _run_to_end(command: List[str]) -> int:
    """Runs the merge in its own session and waits for it even through Ctrl-C: its files are
    written whole or not at all (the interruption is reported after it)."""
    proc = subprocess.Popen(command, start_new_session=True)
    interrupted = False
    while True:
        try:
            rc = proc.wait()
            break
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        _log("interrupted during the merge; it was let finish (status %d)" % rc)
        raise KeyboardInterrupt
    return rc


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        opts, eval_args = parse_args(argv)
        if opts.get("help"):
            sys.stdout.write(_HELP)
            return 0
        signal.signal(signal.SIGTERM, _on_sigterm)
        return run(opts, eval_args)
    except UsageError as e:
        _log("error: %s" % e)
        return 2
    except DriverError as e:
        _log("error: %s" % e)
        return 1
    except _ExitStatus as e:
        return e.status


if __name__ == "__main__":
    # Run as the module kvc.ray_eval, not __main__, so that Ray workers import the actor class
    # from the installed package.
    from kvc.ray_eval import main as _main

    sys.exit(_main())
