"""Tests of the Python binding against the library's own results.

KVC_TEST_REFERENCE names the file written by kvc-bindings-reference (CTest writes it first; see
docs/bindings.md); the model, the fixed ids and the expected NLLs come from there. KVC_EVAL, when
set, is the kvc-eval program whose perplexity must match ours on the sample text.
"""

import json
import math
import os
import subprocess
import sys

import pytest

import kvc

NLL_TOLERANCE = 1e-6  # same library, same inputs: only the float text round trip may differ
STREAMING = {"start_size": 4, "recent_size": 16}


def load_reference():
    path = os.environ.get("KVC_TEST_REFERENCE")
    if not path:
        pytest.fail("KVC_TEST_REFERENCE is not set: run through ctest, or see docs/bindings.md")
    ref = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, _, rest = line.rstrip("\n").partition(" ")
            ref[key] = rest
    assert ref.get("kvc-bindings-reference") == "1", "unknown reference format in " + path
    return ref


REF = load_reference()


def ints(key):
    return [int(x) for x in REF[key].split()]


def floats(key):
    return [float(x) for x in REF[key].split()]


def assert_close(got, want, what):
    assert len(got) == len(want), "%s: %d values, expected %d" % (what, len(got), len(want))
    worst = max(abs(a - b) for a, b in zip(got, want))
    assert worst <= NLL_TOLERANCE, "%s: max |diff| %.3g > %.1g" % (what, worst, NLL_TOLERANCE)


@pytest.fixture(scope="module")
def model():
    with kvc.Model(REF["model"], backend="cpu") as m:
        yield m


def test_versions():
    assert kvc.abi_version()[0] == 1
    assert kvc.version()


def test_model_info(model):
    info = model.info
    assert info.n_layers > 0 and info.n_heads > 0
    assert info.backend == "cpu"
    assert max(ints("ids")) < info.vocab_size


def test_score_baseline_matches_library(model):
    with model.session() as s:
        nll = s.score(ints("ids"))
    assert_close(nll, floats("nll.baseline"), "baseline NLLs")


def test_score_streaming_matches_library(model):
    with model.session("streaming", STREAMING, positions="shift") as s:
        nll = s.score(ints("ids"))
        stats = s.cache_stats()
    assert_close(nll, floats("nll.streaming"), "streaming NLLs")
    total, max_now, evictions, seen = ints("stats.streaming")
    assert (stats.total_entries, stats.max_entries_now, stats.n_evictions, stats.n_tokens_seen) \
        == (total, max_now, evictions, seen)
    assert stats.max_entries_now <= 4 + 16
    assert stats.n_evictions > 0


def test_session_reset_and_step(model):
    ids = ints("ids")
    with model.session() as s:
        first = s.score(ids)
        s.reset()
        assert s.cache_stats().n_tokens_seen == 0
        assert_close(s.score(ids), first, "after reset")
        s.reset()
        logits = s.step(ids[:2], logits="last")
        assert len(logits) == model.info.vocab_size
        # -log softmax(logits)[ids[2]] of the step after ids[0..1] is NLL #1
        m = max(logits)
        lse = m + math.log(sum(math.exp(x - m) for x in logits))
        assert abs((lse - logits[ids[2]]) - first[1]) < 1e-4


def test_prefill_mode_matches_stream_for_baseline(model):
    with model.session() as s:
        nll = s.score(ints("ids"), mode="prefill")
    # A batched forward sums in another order; agreement to float32 rounding is expected.
    assert max(abs(a - b) for a, b in zip(nll, floats("nll.baseline"))) < 1e-4


def test_numpy_optional(model):
    np = pytest.importorskip("numpy")
    with model.session() as s:
        nll = s.score(np.array(ints("ids"), dtype=np.int64), numpy=True)
    assert isinstance(nll, np.ndarray) and nll.dtype == np.float32
    assert_close(nll.tolist(), floats("nll.baseline"), "numpy NLLs")


def test_tokenizer_matches_library(model):
    if REF["tokenizer"] == "none":
        pytest.skip("the model has no tokenizer and no tokenizer file was given")
    text = open(REF["text"], encoding="utf-8").read()
    if REF["tokenizer"] == "model":
        tok = model.tokenizer
        assert tok is not None
    else:
        tok = kvc.Tokenizer(REF["tokenizer"])
    with tok:
        ids = tok.encode(text)
        assert ids == ints("text.ids")
        assert tok.decode(ids) == text
    assert "nll.text" in REF or REF["tokenizer"] != "model"


def test_text_nll_matches_library(model):
    if "nll.text" not in REF:
        pytest.skip("the model has no tokenizer: text scoring needs models/kjv-mini")
    text = open(REF["text"], encoding="utf-8").read()
    with model.session() as s:
        nll = s.score(model.tokenizer.encode(text))
    assert_close(nll, floats("nll.text"), "text NLLs")


def test_ppl_matches_kvc_eval(model, tmp_path):
    """kvc-eval's dense PPL of the sample text equals exp(mean NLL) from this binding."""
    kvc_eval = os.environ.get("KVC_EVAL")
    if not kvc_eval:
        pytest.skip("KVC_EVAL is not set")
    if model.tokenizer is None:
        pytest.skip("the model has no tokenizer: kvc-eval needs models/kjv-mini")
    data = tmp_path / "data"
    data.mkdir()
    text = open(REF["text"], encoding="utf-8").read()
    (data / "sample.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    run = subprocess.run([kvc_eval, "--model_name_or_path", REF["model"], "--data_dir", str(data),
                          "--output_dir", str(out), "--backend", "cpu", "--mode", "baseline",
                          "--num_samples", "1"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    results = [json.load(open(p)) for p in out.glob("*.json")]
    assert results, "kvc-eval wrote no JSON to %s: %s" % (out, run.stdout)
    with model.session() as s:
        mine = s.perplexity(model.tokenizer.encode(text))
    ppl = results[0]["ppl"]
    assert abs(ppl - mine) <= 1e-6 * mine, "kvc-eval PPL %.9g vs binding %.9g" % (ppl, mine)


def test_bad_model_path_raises_with_library_message():
    with pytest.raises(kvc.KvcError) as e:
        kvc.Model("/nonexistent/kvc-model-dir", backend="cpu")
    assert e.value.status in (kvc.Status.IO, kvc.Status.NOT_FOUND)
    assert "/nonexistent/kvc-model-dir" in e.value.message
    assert e.value.message in str(e.value)


def test_unknown_policy_raises_with_library_message(model):
    with pytest.raises(kvc.KvcError) as e:
        model.session("no_such_policy")
    assert e.value.status == kvc.Status.NOT_FOUND
    assert "no_such_policy" in e.value.message
    with pytest.raises(kvc.KvcError) as e:
        kvc.check_policy("streaming", {"start_size": -5})
    assert e.value.message


def test_bad_token_raises(model):
    with model.session() as s, pytest.raises(kvc.KvcError) as e:
        s.score([0, model.info.vocab_size + 5])
    assert e.value.status in (kvc.Status.OUT_OF_RANGE, kvc.Status.INVALID_ARGUMENT)


def test_list_policies():
    names = [p.name for p in kvc.list_policies()]
    assert "streaming" in names, names
    streaming = next(p for p in kvc.list_policies() if p.name == "streaming")
    assert {"start_size", "recent_size"} <= {q.name for q in streaming.params}


def test_closing_model_closes_sessions():
    m = kvc.Model(REF["model"], backend="cpu")
    s = m.session()
    m.close()
    with pytest.raises(ValueError):
        s.score([1, 2])
    s.close()  # idempotent


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
