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
import threading

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


# ---- Argument checking: shapes and types are rejected, never reinterpreted ---------------------


@pytest.mark.parametrize("bad, error", [
    ([[1, 2], [3, 4]], ValueError),  # a 2-D batch is not flattened
    ([1.9, 2.0], TypeError),  # float ids are not truncated
    ([True, 2], TypeError),
    ("In the beginning", TypeError),  # text, not ids
    (7, TypeError),
    ([0, 2 ** 40], ValueError),  # outside int32
])
def test_bad_ids_are_rejected(model, bad, error):
    with model.session() as s:
        with pytest.raises(error):
            s.score(bad)
        assert s.cache_stats().n_tokens_seen == 0  # nothing was fed


def test_bad_numpy_ids_are_rejected(model):
    np = pytest.importorskip("numpy")
    ids = ints("ids")
    with model.session() as s:
        with pytest.raises(ValueError, match="1-D"):
            s.score(np.array([ids[:4], ids[4:8]], dtype=np.int32))
        with pytest.raises(TypeError, match="dtype"):
            s.score(np.array(ids, dtype=np.float32))
        with pytest.raises(TypeError, match="dtype"):
            s.score(np.array(ids, dtype=bool))
        assert s.cache_stats().n_tokens_seen == 0


def test_step_logits_shapes(model):
    ids = ints("ids")[:5]
    vocab = model.info.vocab_size
    with model.session() as s:
        rows = s.step(ids, logits="all")
        assert len(rows) == 5 and all(len(r) == vocab for r in rows)
        s.reset()
        assert len(s.step(ids, logits="last")) == vocab
        assert s.step(ids[:1], logits="none") is None
    np = pytest.importorskip("numpy")
    with model.session() as s:
        arr = s.step(np.array(ids), logits="all", numpy=True)
        assert arr.shape == (5, vocab) and arr.dtype == np.float32
        assert max(abs(a - b) for a, b in zip(arr[-1].tolist(), rows[-1])) == 0


def test_errors_derive_from_builtins(model):
    with pytest.raises(FileNotFoundError) as e:
        kvc.Model("/nonexistent/kvc-model-dir")
    assert isinstance(e.value, kvc.KvcError) and isinstance(e.value, kvc.FileError)
    with pytest.raises(LookupError) as e:
        model.session("no_such_policy")
    assert isinstance(e.value, kvc.NotFoundError) and e.value.call == "kvc_session_create"
    with pytest.raises(ValueError) as e:
        kvc.check_policy("streaming", {"start_size": -5})
    assert isinstance(e.value, kvc.InvalidArgumentError)
    with model.session() as s, pytest.raises(ValueError) as e:
        s.score([0, model.info.vocab_size + 5])
    assert isinstance(e.value, kvc.KvcError)
    with pytest.raises(ValueError):
        model.session(positions="sideways")


# ---- The ABI 1.1 calls ---------------------------------------------------------------------------


def test_score_options_and_report(model):
    ids = ints("ids")
    with model.session("streaming", STREAMING) as s:
        by_token = s.score(ids, block_size=1)
        assert s.score_report().block_size == 1
        s.reset()
        blocked = s.score(ids, block_size=8)
        report = s.score_report()
        assert report.block_size in (1, 8) and report.path in ("block", "token")
    assert_close(blocked, by_token, "block 8 vs token by token")
    with model.session() as s:
        head = s.score(ids[:10], next_token=ids[10])
        assert len(head) == 10
        tail = s.score(ids[10:])
    assert_close(head + tail, floats("nll.baseline"), "scored in two calls")


def test_score_details(model):
    ids = ints("ids")
    with model.session("streaming", STREAMING) as s:
        r = s.score_details(ids, logits=True)
    assert_close(r.nll, floats("nll.streaming"), "details NLLs")
    assert len(r.cache_entries) == len(ids) and max(r.cache_entries) <= 4 + 16
    assert sum(r.evicted) > 0
    assert len(r.logits) == len(ids) and len(r.logits[0]) == model.info.vocab_size


def test_policy_params_typed(model):
    p = kvc.PolicyParams("streaming", {"start_size": 4})
    p.set("recent_size", 16)
    assert p.policy.name == "streaming"
    assert p.get("recent_size") == 16 and p.is_set("start_size")
    assert set(p.values()) >= {"start_size", "recent_size"}
    with pytest.raises(TypeError):
        p.set("recent_size", 1.5)
    with pytest.raises(ValueError):  # set twice
        p.set("start_size", 8)
    p.check()
    with model.session(p) as s:
        nll = s.score(ints("ids"))
        report = s.policy_report()
    p.close()
    assert_close(nll, floats("nll.streaming"), "typed streaming NLLs")
    assert "streaming" in json.dumps(report)


def test_cache_scores_and_keep(model):
    ids = ints("ids")
    with model.session("h2o", {"start_size": 2, "recent_size": 8, "heavy_size": 8}) as s:
        s.score(ids)
        positions, _ = s.cache_entries(0, 0)
        assert len(s.cache_scores(0, 0)) == len(positions)
    with model.session("streaming", STREAMING) as s:
        s.score(ids)
        with pytest.raises(LookupError):
            s.cache_scores(0, 0)
        s.keep(-1, -1, [0, 1])
        assert s.cache_stats().max_entries_now == 2


def test_perplexity_helper(model):
    ids = ints("ids")
    with model.session() as s:
        nll = s.score(ids)
    with model.session() as s:
        assert abs(s.perplexity(ids) - kvc.perplexity(nll)) < 1e-9


# ---- Sampling and generation (ABI 1.2) -----------------------------------------------------------

# The sampler of the reference's gen.sampled case (reference.c), on a streaming 4 + 16 session.
SAMPLED = dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.02, repetition_penalty=1.1,
               repetition_last_n=64, seed=1234)


def ref_text(key):
    """A generated text of the reference (hex of its UTF-8 bytes), or None without one."""
    return bytes.fromhex(REF[key]).decode("utf-8") if key in REF else None


def generate_threads():
    return [t for t in threading.enumerate() if t.name == "kvc-generate" and t.is_alive()]


def test_generate_greedy_matches_library(model):
    with model.session() as s:
        stream = s.generate(ints("gen.prompt"), 16, temperature=0)
        assert stream.result is None  # nothing runs before the iteration
        toks = list(stream)
    assert [t.id for t in toks] == ints("gen.greedy")
    assert stream.result.tokens == ints("gen.greedy")
    assert stream.result.stop_reason == kvc.StopReason.MAX_TOKENS
    assert stream.result.stop_index == -1
    assert stream.result.text == "".join(t.text for t in toks) == stream.text
    if "gen.greedy.text" in REF:
        assert stream.text == ref_text("gen.greedy.text")
    with model.session() as s:
        g = s.generate_text(ints("gen.prompt"), 16, temperature=0)
    assert g.tokens == ints("gen.greedy") and g.text == stream.text
    assert not generate_threads()


def test_generate_greedy_is_argmax_of_step_logits(model):
    """Greedy generation picks the largest logit (the lowest id among equal ones) of the ids
    the tokenizer names, step after step with each token fed back."""
    prompt = ints("gen.prompt")
    with model.session() as s:
        g = s.generate_text(prompt, 8, temperature=0)
    n = model.info.vocab_size
    if model.tokenizer is not None:
        n = min(n, model.tokenizer.vocab_size)
    greedy = kvc.Sampler(temperature=0)
    with model.session() as s:
        logits = s.step(prompt)
        for token in g.tokens:
            row = logits[:n]
            assert max(range(n), key=row.__getitem__) == token
            assert greedy.sample(row) == token
            logits = s.step([token])


def test_generate_sampled_matches_library_and_repeats(model):
    runs = []
    for _ in range(2):
        with model.session("streaming", STREAMING) as s:
            runs.append(s.generate_text(ints("gen.prompt"), 16, **SAMPLED))
            assert s.cache_stats().max_entries_now <= 4 + 16
    assert runs[0].tokens == ints("gen.sampled")
    assert runs[1] == runs[0]  # a fixed seed repeats
    if "gen.sampled.text" in REF:
        assert runs[0].text == ref_text("gen.sampled.text")
    with model.session("streaming", STREAMING) as s:
        streamed = [t.id for t in s.generate(ints("gen.prompt"), 16, **SAMPLED)]
    assert streamed == ints("gen.sampled")
    with model.session("streaming", STREAMING) as s:
        other = s.generate_text(ints("gen.prompt"), 16, **dict(SAMPLED, seed=99))
    assert other.tokens != runs[0].tokens  # another seed, another draw


def test_sampler_object(model):
    flat = [0.0] * 50
    sampler = kvc.Sampler(seed=7)
    first = [sampler.sample(flat) for _ in range(12)]
    assert len(set(first)) > 1 and all(0 <= t < 50 for t in first)
    sampler.reset()  # the random stream starts again
    assert [sampler.sample(flat) for _ in range(12)] == first
    assert kvc.Sampler(temperature=0).sample([0.5, 3.0, 3.0, float("nan")]) == 1
    assert kvc.Sampler(top_k=1, seed=3).sample([0.5, 1.0, 3.5, -2.0]) == 2
    # The repetition penalty looks at the accepted history: 2.0 / 4 < 1.0
    penalized = kvc.Sampler(temperature=0, repetition_penalty=4.0)
    penalized.accept([0])
    assert penalized.sample([2.0, 1.0]) == 1
    with pytest.raises(ValueError):  # no finite logit: the library's own error
        kvc.Sampler().sample([float("nan"), float("-inf")])
    with pytest.raises(kvc.InvalidArgumentError) as e:
        kvc.Sampler().sample([float("nan"), float("-inf")])
    assert e.value.call == "kvc_sampler_sample"
    # A Sampler passed to generate continues its stream: two runs differ, a reset repeats.
    prompt = ints("gen.prompt")
    sampler = kvc.Sampler(**SAMPLED)
    with model.session("streaming", STREAMING) as s:
        a = s.generate_text(prompt, 16, sampler=sampler)
    assert a.tokens == ints("gen.sampled")
    sampler.reset()
    with model.session("streaming", STREAMING) as s:
        assert s.generate_text(prompt, 16, sampler=sampler).tokens == a.tokens
    with model.session() as s, pytest.raises(ValueError, match="temperature"):
        s.generate(prompt, 4, sampler=sampler, temperature=0.5)
    sampler.close()
    with pytest.raises(ValueError):
        sampler.sample(flat)


def test_generate_stop_sequence(model):
    if model.tokenizer is None:
        with model.session() as s, pytest.raises(kvc.InvalidArgumentError) as e:
            s.generate_text(ints("gen.prompt"), 4, stop=["x"])
        assert "tokenizer" in e.value.message
        pytest.skip("stop sequences need the model's tokenizer (models/kjv-mini)")
    prompt = ints("gen.prompt")
    with model.session() as s:
        full = s.generate_text(prompt, 24, temperature=0).text
    # Six characters from a third of the way in: they span token boundaries.
    start = len(full) // 3
    stop = full[start:start + 6]
    want = full[:full.find(stop)]
    with model.session() as s:
        stream = s.generate(prompt, 24, temperature=0, stop=["\x01never", stop])
        pieces = [t.text for t in stream]
    r = stream.result
    assert "".join(pieces) == want == r.text
    assert r.stop_reason == kvc.StopReason.SEQUENCE and r.stop_index == 1
    assert len(r.tokens) < 24
    with model.session() as s:  # one str is one stop sequence
        g = s.generate_text(prompt, 24, temperature=0, stop=stop)
    assert g.text == want and g.stop_index == 0


def test_generate_stop_tokens(model):
    greedy = ints("gen.greedy")
    target = greedy[5]
    with model.session() as s:
        g = s.generate_text(ints("gen.prompt"), 16, temperature=0, stop_tokens=[-1, target])
    assert g.tokens == greedy[:greedy.index(target) + 1]
    assert g.stop_reason == kvc.StopReason.TOKEN and g.stop_index == 1


def test_generate_breaking_early_stops(model):
    prompt, greedy = ints("gen.prompt"), ints("gen.greedy")
    with model.session() as s:
        stream = s.generate(prompt, 16, temperature=0)
        for k, t in enumerate(stream):
            assert t.id == greedy[k]
            if k == 3:
                break
        stream.close()
        assert not generate_threads()
        r = stream.result
        assert r.stop_reason == kvc.StopReason.CALLBACK and r.tokens == greedy[:4]
        # The session holds the prompt and the yielded tokens but the last, which continues.
        assert s.cache_stats().n_tokens_seen == len(prompt) + 3
        assert s.generate_text(greedy[3:4], 12, temperature=0).tokens == greedy[4:]

    # A loop over the stream itself: leaving it frees the stream, which stops and joins.
    with model.session() as s:
        for k, _ in enumerate(s.generate(prompt, 16, temperature=0)):
            if k == 1:
                break
        assert not generate_threads()
        assert s.cache_stats().n_tokens_seen == len(prompt) + 1

    # A stream kept but left: the next call on the session stops it first.
    with model.session() as s:
        stream = s.generate(prompt, 16, temperature=0)
        assert next(stream).id == greedy[0]
        assert stream.result is None and len(generate_threads()) == 1  # running: streaming
        assert s.cache_stats().n_tokens_seen == len(prompt)
        assert not generate_threads()
        assert stream.result.stop_reason == kvc.StopReason.CALLBACK
        assert list(stream) == []
    # Closing the model closes the session, which stops its generation.
    m = kvc.Model(REF["model"], backend="cpu")
    stream = m.session().generate(prompt, 16, temperature=0)
    next(stream)
    m.close()
    assert not generate_threads() and list(stream) == []


def test_generate_errors_surface_in_iterator(model):
    prompt, greedy = ints("gen.prompt"), ints("gen.greedy")
    with model.session() as s:
        stream = s.generate([], 4)  # the library rejects an empty prompt when it runs
        with pytest.raises(kvc.InvalidArgumentError) as e:
            next(stream)
        assert e.value.call == "kvc_generate" and "empty" in e.value.message
        assert list(stream) == []
    # The cache limit is reached after a few tokens: they are yielded, then the error.
    with model.session(max_entries=len(prompt) + 2) as s:
        got = []
        with pytest.raises(kvc.KvcError) as e:
            for t in s.generate(prompt, 16, temperature=0):
                got.append(t.id)
        assert e.value.call == "kvc_generate"
        assert 1 <= len(got) < 16 and got == greedy[:len(got)]
    assert not generate_threads()


@pytest.mark.parametrize("bad, error", [
    (dict(temperature=-0.5), ValueError),
    (dict(temperature=float("inf")), ValueError),
    (dict(top_k=-1), ValueError),
    (dict(top_p=0.0), ValueError),
    (dict(top_p=1.5), ValueError),
    (dict(top_p=float("nan")), ValueError),
    (dict(min_p=-0.1), ValueError),
    (dict(min_p=1.5), ValueError),
    (dict(repetition_penalty=0.0), ValueError),
    (dict(repetition_penalty=float("nan")), ValueError),
    (dict(repetition_last_n=-2), ValueError),
    (dict(seed=-1), ValueError),
    (dict(seed=2 ** 64), ValueError),
    (dict(max_tokens=-1), ValueError),
    (dict(stop=[""]), ValueError),
    (dict(temperature="hot"), TypeError),
    (dict(top_k=1.5), TypeError),
    (dict(top_k=True), TypeError),
    (dict(stop=[3]), TypeError),
])
def test_generate_bad_values_are_rejected(model, bad, error):
    with model.session() as s:
        with pytest.raises(error):
            s.generate(ints("gen.prompt"), **bad)  # at the call, not at the first token
        with pytest.raises(error):
            s.generate_text(ints("gen.prompt"), **bad)
        assert s.cache_stats().n_tokens_seen == 0  # nothing ran
    sampler_only = {k: v for k, v in bad.items() if k in SAMPLED}
    if sampler_only:
        with pytest.raises(error):
            kvc.Sampler(**sampler_only)


@pytest.mark.parametrize("field, bad, good", [
    ("temperature", -0.5, 0.0), ("top_k", -1, 0), ("top_p", 0.0, 1.0), ("top_p", 1.5, 1.0),
    ("min_p", -0.1, 1.0), ("min_p", 1.5, 0.0), ("repetition_penalty", 0.0, 0.01),
    ("repetition_last_n", -2, -1),
])
def test_sampler_checks_mirror_the_library(field, bad, good):
    """The binding's checks reject what kvc_sampler_create rejects, and accept its edges."""
    from kvc import _lib

    def library_accepts(value):
        o = _lib.init(_lib.kvc_sampler_options, kvc._C.kvc_sampler_options_init_size)
        setattr(o, field, value)
        h = kvc.ctypes.c_void_p()
        status = kvc._C.kvc_sampler_create(kvc.ctypes.byref(o), kvc.ctypes.byref(h))
        kvc._C.kvc_sampler_free(h)
        return status == kvc.Status.OK

    assert not library_accepts(bad) and library_accepts(good)
    with pytest.raises(ValueError):
        kvc.Sampler(**{field: bad})
    kvc.Sampler(**{field: good}).close()


def test_generate_text_prompt(model):
    if model.tokenizer is None:
        with model.session() as s, pytest.raises(ValueError, match="tokenizer"):
            s.generate("In the beginning", 4)
        pytest.skip("a text prompt needs the model's tokenizer (models/kjv-mini)")
    text = open(REF["text"], encoding="utf-8").read()
    prompt = model.tokenizer.encode(text)[:16]
    assert prompt == ints("gen.prompt")
    with model.session() as s:
        g = s.generate_text(model.tokenizer.decode(prompt), 16, temperature=0)
    assert g.tokens == ints("gen.greedy")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
