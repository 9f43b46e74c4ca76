"""Tests of kvc.ray_eval without a Ray cluster (docs/scale-out.md).

The driver's command line, its copy of kvc-eval's split, and the actor class (ShardWorker) run
directly in this process: it drives a real ``kvc-eval --worker``, survives the worker being
killed, and its shard files merge into exactly the single run's results. KVC_EVAL (set by CTest)
names the kvc-eval program; without it those cases skip. The Ray cluster itself is tested by
scripts/ci_ray.sh.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from kvc import ray_eval

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
MODEL = os.path.join(ROOT, "models", "kjv-mini")
TEXTS = {
    "a.txt": "In the beginning God created the heaven and the earth. And the earth was without "
             "form, and void; and darkness was upon the face of the deep. And the Spirit of God "
             "moved upon the face of the waters. And God said, Let there be light.",
    "b.txt": "And God saw the light, that it was good: and God divided the light from the "
             "darkness. And God called the light Day, and the darkness he called Night.",
    "c.txt": "Blessed are the poor in spirit: for theirs is the kingdom of heaven.",
}


def test_arguments_split_into_driver_options_and_kvc_eval_flags():
    opts, rest = ray_eval.parse_args(
        ["--mode", "all", "--num_workers", "2", "--output_dir=out", "--data_dir", "d",
         "--cpus_per_worker", "1.5", "--config", "c.toml"])
    assert rest == ["--mode", "all", "--data_dir", "d", "--config", "c.toml"]
    assert opts["num_workers"] == 2 and opts["output_dir"] == "out"
    assert opts["cpus_per_worker"] == 1.5 and opts["gpus_per_worker"] == 0
    assert opts["address"] is None and opts["max_retries"] == 3


@pytest.mark.parametrize("argv, message", [
    (["--shard", "0/2"], "--shard is set by the driver"),
    (["--merge=x"], "--merge is set by the driver"),
    (["--worker"], "--worker is set by the driver"),
    (["--list_items"], "--list_items is set by the driver"),
    (["--num_workers", "1", "--num_workers", "2"], "--num_workers is given twice"),
    (["--num_workers", "two"], "'two' is not a int"),
    (["--num_workers", "0"], "at least 1"),
    (["--address"], "--address needs a value"),
    (["--mode", "all", "--task", "passkey"], "only --task ppl is split into work items"),
    (["--task=copy"], "the copy task runs in one process"),
])
def test_bad_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(ray_eval.UsageError, match=message):
        ray_eval.parse_args(argv)
    assert ray_eval.main(argv) == 2
    assert message in capsys.readouterr().err


def test_help_names_the_driver_options(capsys):
    assert ray_eval.main(["--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--address", "--num_workers", "--cpus_per_worker", "--gpus_per_worker",
                   "--kvc_eval", "--output_dir"):
        assert option in out


def test_missing_ray_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(ray_eval.DriverError, match=r"pip install 'ray\[default\]'.*'\.\[ray\]'"):
        ray_eval._import_ray()


def test_the_ppl_task_is_passed_through():
    opts, rest = ray_eval.parse_args(["--task", "ppl", "--mode", "streaming"])
    assert rest == ["--task", "ppl", "--mode", "streaming"]


def test_assign_shards_is_kvc_evals_split():
    # Largest first, each to the lightest shard, the lowest index on ties (stable order).
    assert ray_eval.assign_shards([5, 3, 3, 1], 2) == [0, 1, 1, 0]
    assert ray_eval.assign_shards([1, 2, 3], 3) == [2, 1, 0]
    assert ray_eval.assign_shards([4, 4, 4], 3) == [0, 1, 2]


def test_a_missing_kvc_eval_lists_the_places_looked_at(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("KVC_EVAL", str(tmp_path / "nothing"))
    monkeypatch.setattr(ray_eval, "__file__", str(tmp_path / "kvc" / "ray_eval.py"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(ray_eval.UsageError, match="kvc-eval on PATH"):
        ray_eval.find_kvc_eval()
    with pytest.raises(ray_eval.UsageError, match="not an executable"):
        ray_eval.find_kvc_eval(str(tmp_path / "nothing"))


# ---- with kvc-eval ------------------------------------------------------------------------------

def kvc_eval_program():
    program = os.environ.get("KVC_EVAL")
    if not program or not os.access(program, os.X_OK):
        pytest.skip("KVC_EVAL is not set")
    if not os.path.isfile(os.path.join(MODEL, "model.safetensors")):
        pytest.skip(MODEL + " has no weights")
    return program


@pytest.fixture
def work(tmp_path):
    (tmp_path / "data").mkdir()
    for name, text in TEXTS.items():
        (tmp_path / "data" / name).write_text(text)
    return tmp_path


def flags():
    return ["--model_name_or_path", MODEL, "--data_dir", "data", "--mode", "all",
            "--figures=false", "--threads", "1", "--start_size", "2", "--recent_size", "6",
            "--heavy_size", "4", "--separator_size", "2", "--local_size", "6",
            "--cache_size", "20"]


def comparable(j):
    for key in ("tokens_per_sec", "wall_time_s", "merged_from"):
        j.pop(key, None)
    j["settings"]["eval"].pop("output_dir", None)
    return j


def test_the_split_agrees_with_kvc_eval(work):
    program = kvc_eval_program()
    rc, out, err = ray_eval.list_items(program, flags(), str(work), {})
    assert rc == 0, err
    items = json.loads(out)["items"]
    tokens = [it["tokens"] for it in items]
    for n in (2, 3, len(items)):
        rc, out, err = ray_eval.list_items(program, flags() + ["--shard", "0/%d" % n],
                                           str(work), {})
        assert rc == 0, err
        assert [it["shard"] for it in json.loads(out)["items"]] == \
            ray_eval.assign_shards(tokens, n)
    # One shard per item: every item its own shard.
    assert sorted(ray_eval.assign_shards(tokens, len(items))) == list(range(len(items)))


def test_a_task_set_in_a_config_is_refused_clearly(work):
    # --task in a config file is not seen by the command-line check: kvc-eval refuses
    # --list_items, and the driver recognizes its message.
    program = kvc_eval_program()
    (work / "task.toml").write_text('[eval]\ntask = "passkey"\n')
    rc, out, err = ray_eval.list_items(program, ["--config", "task.toml"] + flags(), str(work),
                                       {})
    assert rc == 2, err
    match = ray_eval._TASK_REFUSED.search(err)
    assert match and match.group(1) == "passkey", err


def test_the_actor_serves_shards_survives_a_killed_worker_and_merges_exactly(work):
    program = kvc_eval_program()
    rc, out, err = ray_eval.list_items(program, flags(), str(work), {})
    assert rc == 0, err
    k = json.loads(out)["count"]
    worker = ray_eval.ShardWorker(program, flags(), str(work), {})
    folder = worker.info()["dir"]
    results = {}
    try:
        for i in range(k):
            if i == 1:
                # The worker process dies: the shard fails as WorkerDied (the driver retries it)
                # and the next call starts a new worker.
                os.kill(worker.info()["worker_pid"], signal.SIGKILL)
                with pytest.raises(ray_eval.WorkerDied, match="killed by signal 9"):
                    worker.run(i, k)
            results[i] = worker.run(i, k)
            assert "shard-%d-of-%d.json" % (i, k) in results[i]["files"]
        with pytest.raises(ray_eval.ShardFailed):  # a bad request is an error, not a death
            worker.run(k, k)
    finally:
        worker.close()
    assert not os.path.exists(folder)

    staging = work / "staging"
    staging.mkdir()
    ray_eval._write_staging(str(staging), results)
    merged = subprocess.run([program] + flags() + ["--merge", str(staging), "--output_dir",
                                                   "merged"], cwd=str(work),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert merged.returncode == 0, merged.stderr.decode()
    single = subprocess.run([program] + flags() + ["--output_dir", "single"], cwd=str(work),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert single.returncode == 0, single.stderr.decode()
    names = sorted(n for n in os.listdir(str(work / "single")) if n.endswith(".json"))
    assert names == sorted(n for n in os.listdir(str(work / "merged")) if n.endswith(".json"))
    for name in names:
        a = json.loads((work / "single" / name).read_text())
        b = json.loads((work / "merged" / name).read_text())
        assert sum(f["nll_sum"] for f in a["files"]) == sum(f["nll_sum"] for f in b["files"])
        assert comparable(a) == comparable(b), name
