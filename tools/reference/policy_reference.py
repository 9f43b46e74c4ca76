#!/usr/bin/env python3
"""Readable reference of kvc's decode step with KV-cache eviction, and the policy fixtures.

Developer-only (torch + transformers from /work/venv). The rules implemented here are written
down in docs/reference-implementation.md; the C++ policies must follow that document and
reproduce the fixtures this script writes to tests/fixtures/policies/.

    # synthetic fixture model (tests/fixtures/models/neox-peaked, see make_core_golden.py)
    /work/venv/bin/python tools/reference/policy_reference.py
    # any other GPT-NeoX folder, token stream from its tokenizer on a fixed text
    /work/venv/bin/python tools/reference/policy_reference.py --model models/kjv-mini \\
        --text data/kjv/eval/<book>.txt --prefix kjv-

The model's weights and modules (LayerNorms, projections, MLP) come from transformers'
GPTNeoXForCausalLM; the attention loop is our own so that each (layer, head) cache can be an
arbitrary subset of the past. Every case is run twice, in float32 and float64: both must make
identical eviction decisions; the fixture stores the float64 NLLs.
"""

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import torch
from transformers import GPTNeoXForCausalLM

REPO = Path(__file__).resolve().parents[2]
# SepLLM's streaming separators as strings (policies.md §4 lists their GPT-NeoX-20B ids).
SEPARATOR_STRINGS = [".", ",", "?", "!", ";", ":", " ", "\t", "\n", " \n", "\n ", " \n ",
                     "  ", "   "]
HF_TOLERANCE = 1e-5  # max |logit| difference between this loop (no eviction) and transformers


# ----------------------------------------------------------------------------------------------
# Policies. A policy sees one "group" at a time: the ordered (oldest first) list of original
# positions cached in one (layer, head), or in every (layer, head) at once when the policy keeps
# the same entries everywhere (streaming, sepllm, scope="shared"). It returns the positions to
# keep, in age order. Scores are the accumulated attention probabilities (see Runner).
# ----------------------------------------------------------------------------------------------

class Policy:
    def __init__(self, name, params, tokens):
        self.name = name
        self.p = dict(params)
        self.tokens = tokens
        self.counter = 0        # step counter of the lazy rule (docs rule L2)
        self.protected = {}     # group key -> set of protected positions (lazy rule)
        self.gaps = []          # relative score gap k-th vs (k+1)-th at every top-k selection
        p = self.p
        if name == "baseline":
            self.capacity = None
        elif name == "streaming":
            self.capacity = p["start_size"] + p["recent_size"]
        elif name in ("h2o", "lazy_h2o"):
            self.capacity = p["start_size"] + p["recent_size"] + p["heavy_size"]
        elif name == "sepllm":
            assert p["start_size"] + p["separator_size"] + p["local_size"] < p["cache_size"]
            self.capacity = p["cache_size"]
        elif name == "unified":
            self.capacity = (p["start_size"] + p["separator_size"] + p["heavy_size"]
                             + p["local_size"])
        else:
            raise ValueError(f"unknown policy {name}")
        self.seps = set(p.get("separators", []))

    @property
    def scope(self):
        if self.name in ("h2o", "lazy_h2o", "unified"):
            return self.p.get("scope", "per_head")
        return "shared"  # position/token based policies keep the same entries everywhere

    @property
    def needs_scores(self):
        return self.name in ("h2o", "lazy_h2o", "unified")

    @property
    def interval(self):
        if self.name == "lazy_h2o":
            return self.p.get("update_interval", 10)
        if self.name == "unified":
            return self.p.get("update_interval", 0)
        return 0

    def tick(self):
        self.counter += 1  # before the refresh check: step t (0-based) sees counter t + 1

    def select(self, key, pos, score):
        """pos: age-ordered positions of one group; score(p) -> accumulated score."""
        L = len(pos)
        if self.capacity is None or L <= self.capacity:
            return pos
        p = self.p
        a = p["start_size"]
        if self.name == "streaming":
            r = p["recent_size"]
            return pos[:a] + pos[L - r:]
        if self.name == "sepllm":
            w = p["local_size"]
            mid = pos[a:L - w]
            seps = [q for q in mid if self.tokens[q] in self.seps]
            seps = seps[max(0, len(seps) - p["separator_size"]):] if p["separator_size"] else []
            return pos[:a] + seps + pos[L - w:]
        # h2o, lazy_h2o, unified: sinks | middle | window
        w = p["recent_size"] if self.name != "unified" else p["local_size"]
        s = p["separator_size"] if self.name == "unified" else 0
        h = p["heavy_size"]
        mid = pos[a:L - w]
        seps = [q for q in mid if self.tokens[q] in self.seps] if s else []
        seps = seps[max(0, len(seps) - s):] if s else []
        kept_seps = set(seps)
        rest = [q for q in mid if q not in kept_seps]  # heavy-hitter candidates, age order
        n = self.interval
        # A lazy policy refreshes on counter % N == 0, and also whenever more than one entry is
        # over capacity (only after a multi-token prefill) so its heavy set is never FIFO-filled.
        if n == 0 or self.counter % n == 0 or L > self.capacity + 1:
            ranked = sorted(rest, key=lambda q: (-score(q), q))  # ties: older first
            heavy = ranked[:h]
            if 0 < h < len(ranked):
                hi, lo = score(ranked[h - 1]), score(ranked[h])
                self.gaps.append((hi - lo) / hi if hi > 0 else 0.0)
            if n:
                self.protected[key] = set(heavy)
            keep = set(pos[:a]) | kept_seps | set(heavy) | set(pos[L - w:])
            return [q for q in pos if q in keep]
        # Lazy, non-refresh step: evict the oldest unprotected candidate, else the oldest
        # protected one, until the group is back at capacity.
        prot = self.protected.setdefault(key, set())
        evict = set()
        for _ in range(L - self.capacity):
            free = [q for q in rest if q not in prot and q not in evict]
            victim = free[0] if free else [q for q in rest if q not in evict][0]
            evict.add(victim)
            prot.discard(victim)
        return [q for q in pos if q not in evict]


# ----------------------------------------------------------------------------------------------
# Decode loop with our own attention over per-(layer, head) caches.
# ----------------------------------------------------------------------------------------------

class Runner:
    def __init__(self, hf_model, dtype, angles_f32=None):
        self.m = hf_model.to(dtype).eval()
        self.dtype = dtype
        # transformers computes the rotary angles pos * inv_freq in float32 whatever the model
        # dtype. float32 runs do the same; the float64 reference computes them in float64
        # (angles_f32=False). Both runs must lead to the same eviction decisions.
        self.angles_f32 = dtype == torch.float32 if angles_f32 is None else angles_f32
        c = self.m.config
        self.L = c.num_hidden_layers
        self.H = c.num_attention_heads
        self.D = c.hidden_size // c.num_attention_heads
        self.rot = int(self.D * c.rope_parameters["partial_rotary_factor"])
        base = c.rope_parameters["rope_theta"]
        if self.angles_f32:  # bit-identical to transformers' buffer
            self.inv_freq = self.m.gpt_neox.rotary_emb.inv_freq.float()
        else:
            self.inv_freq = 1.0 / (base ** (torch.arange(0, self.rot, 2, dtype=dtype) / self.rot))
        self.parallel = c.use_parallel_residual

    def rope(self, x, pos):
        """x [..., D]; pos broadcastable to x[..., 0]. rotate_half on the first rot channels."""
        freqs = pos.to(self.inv_freq.dtype)[..., None] * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(self.dtype), emb.sin().to(self.dtype)
        xr, xp = x[..., :self.rot], x[..., self.rot:]
        half = self.rot // 2
        rot_half = torch.cat((-xr[..., half:], xr[..., :half]), dim=-1)
        return torch.cat((xr * cos + rot_half * sin, xp), dim=-1)

    @torch.no_grad()
    def run(self, tokens, policy, positions, keep_logits=False):
        m, H, D = self.m, self.H, self.D
        n = len(tokens)
        hid = m.config.hidden_size
        hist_k = torch.zeros(self.L, n, H, D, dtype=self.dtype)
        hist_v = torch.zeros(self.L, n, H, D, dtype=self.dtype)
        kept = [[[] for _ in range(H)] for _ in range(self.L)]   # age-ordered positions
        scope = policy.scope
        score_layers = policy.p.get("score_layers", [0]) if scope == "shared" else None
        scores = torch.zeros(self.L, H, n, dtype=self.dtype)      # per-head accumulators
        shared = torch.zeros(n, dtype=self.dtype)                 # scope="shared" accumulator
        nll, sizes, digests, all_logits = [], [], [], []
        heads = torch.arange(H)[:, None]
        for t, tok in enumerate(tokens):
            h = m.gpt_neox.embed_in(torch.tensor(tok))
            for li, layer in enumerate(m.gpt_neox.layers):
                qkv = layer.attention.query_key_value(layer.input_layernorm(h)).view(H, 3 * D)
                q, k, v = qkv[:, :D], qkv[:, D:2 * D], qkv[:, 2 * D:]
                hist_k[li, t], hist_v[li, t] = k, v
                for hh in range(H):
                    kept[li][hh].append(t)
                lens = {len(x) for x in kept[li]}
                assert len(lens) == 1, f"heads of layer {li} hold different counts {lens}"
                idx = torch.tensor(kept[li])                      # [H, Lc]
                Lc = idx.shape[1]
                if positions == "shift":
                    kpos, qpos = torch.arange(Lc).expand(H, Lc), torch.tensor(Lc - 1)
                else:
                    kpos, qpos = idx, torch.tensor(t)
                K = self.rope(hist_k[li][idx, heads], kpos)       # [H, Lc, D]
                V = hist_v[li][idx, heads]
                qr = self.rope(q, qpos)                           # [H, D]
                att = torch.matmul(qr[:, None, :], K.transpose(1, 2))[:, 0] * D ** -0.5
                prob = torch.softmax(att, dim=-1)                 # [H, Lc]
                out = torch.matmul(prob[:, None, :], V)[:, 0].reshape(hid)
                a = layer.attention.dense(out)
                if policy.needs_scores:
                    if scope == "shared":
                        if li in score_layers:
                            shared.index_add_(0, idx[0], prob.sum(0))
                    else:
                        scores[li].scatter_add_(1, idx, prob)
                if self.parallel:
                    h = h + a + layer.mlp(layer.post_attention_layernorm(h))
                else:
                    h = h + a
                    h = h + layer.mlp(layer.post_attention_layernorm(h))
            logits = m.lm_head(m.gpt_neox.final_layer_norm(h))
            if keep_logits:
                all_logits.append(logits)
            if t + 1 < n:  # NLL of the next token, before any eviction (policies.md §3)
                nll.append(-torch.log_softmax(logits.double() if self.dtype == torch.float64
                                              else logits, -1)[tokens[t + 1]].item())
            # bookkeeping and eviction
            policy.tick()
            if scope == "shared":
                sc = lambda q: shared[q].item()  # noqa: E731
                new = policy.select("shared", kept[0][0], sc)
                kept = [[list(new) for _ in range(H)] for _ in range(self.L)]
            else:
                for li in range(self.L):
                    for hh in range(H):
                        row = scores[li, hh]
                        kept[li][hh] = policy.select((li, hh), kept[li][hh],
                                                     lambda q, row=row: row[q].item())
            sizes.append(len(kept[0][0]))
            digests.append(hash(tuple(tuple(x) for layer in kept for x in layer)))
        return dict(nll=nll, sizes=sizes, digests=digests, kept=kept,
                    logits=torch.stack(all_logits) if keep_logits else None)


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------

def synthetic_tokens(n, seed, separators, sep_prob):
    """Random ids in [4, 100) with the separator ids mixed in at rate sep_prob."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        if torch.rand((), generator=g).item() < sep_prob:
            out.append(separators[torch.randint(len(separators), (), generator=g).item()])
        else:
            out.append(torch.randint(4, 100, (), generator=g).item())
    return out


def case_list(separators):
    S, R, HV = 4, 32, 16
    h2o = dict(start_size=S, recent_size=R, heavy_size=HV)
    uni = dict(start_size=S, separator_size=8, heavy_size=HV, local_size=R)
    sep = dict(start_size=S, separator_size=16, local_size=R, cache_size=80,
               separators=separators)
    cases = [
        ("baseline", "baseline", {}, "shift"),
        ("streaming-shift", "streaming", dict(start_size=S, recent_size=R), "shift"),
        ("streaming-original", "streaming", dict(start_size=S, recent_size=R), "original"),
        ("h2o-perhead-shift", "h2o", dict(h2o, scope="per_head", score_layers=[0]), "shift"),
        ("h2o-perhead-original", "h2o", dict(h2o, scope="per_head", score_layers=[0]),
         "original"),
        ("h2o-shared-shift", "h2o", dict(h2o, scope="shared", score_layers=[0]), "shift"),
        ("h2o-shared-original", "h2o", dict(h2o, scope="shared", score_layers=[0]), "original"),
        ("h2o-shared-all-layers-shift", "h2o", dict(h2o, scope="shared", score_layers=[0, 1]),
         "shift"),
        ("lazy-h2o-perhead-shift", "lazy_h2o",
         dict(h2o, scope="per_head", score_layers=[0], update_interval=10), "shift"),
        ("lazy-h2o-shared-original", "lazy_h2o",
         dict(h2o, scope="shared", score_layers=[0], update_interval=7), "original"),
        ("sepllm-shift", "sepllm", sep, "shift"),
        ("sepllm-original", "sepllm", sep, "original"),
        ("unified-perhead-shift", "unified",
         dict(uni, scope="per_head", score_layers=[0], update_interval=0,
              separators=separators), "shift"),
        ("unified-shared-shift", "unified",
         dict(uni, scope="shared", score_layers=[0], update_interval=0,
              separators=separators), "shift"),
        ("lazy-unified-shared-shift", "unified",
         dict(uni, scope="shared", score_layers=[0], update_interval=10,
              separators=separators), "shift"),
        ("lazy-unified-perhead-original", "unified",
         dict(uni, scope="per_head", score_layers=[0], update_interval=5,
              separators=separators), "original"),
    ]
    return cases


def weights_sha256(model_dir):
    """sha256 over the folder's safetensors files (name order): tells a stale fixture apart."""
    h = hashlib.sha256()
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


def load(model_dir):
    return GPTNeoXForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32,
                                              attn_implementation="eager").eval()


def check_against_hf(model_dir, tokens):
    """With no eviction our loop must reproduce transformers' logits."""
    hf = load(model_dir)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor([tokens]), use_cache=False).logits[0]
    ours = Runner(load(model_dir), torch.float32).run(
        tokens, Policy("baseline", {}, tokens), "shift", keep_logits=True)["logits"]
    err = (ours - ref).abs().max().item()
    hf64 = GPTNeoXForCausalLM.from_pretrained(str(model_dir), dtype=torch.float64,
                                              attn_implementation="sdpa").eval()
    with torch.no_grad():
        ref64 = hf64(input_ids=torch.tensor([tokens]), use_cache=False).logits[0]
    # transformers' eager attention takes its softmax in float32 even for a float64 model; SDPA
    # stays in float64. With transformers' float32 angles the float64 loop must then agree to
    # rounding: this checks the loop's logic exactly (the float32 check is limited by noise).
    ours64 = Runner(load(model_dir), torch.float64, angles_f32=True).run(
        tokens, Policy("baseline", {}, tokens), "shift", keep_logits=True)["logits"]
    err64 = (ours64 - ref64).abs().max().item()
    err32_64 = (ref - ref64).abs().max().item()
    print(f"no-eviction loop vs transformers, max |dlogit|: float32 {err:.3g} (transformers "
          f"float32 vs float64: {err32_64:.3g}), float64 {err64:.3g}")
    assert err64 < 1e-10, err64
    assert err < max(HF_TOLERANCE, 2 * err32_64), err
    return err


def attention_stats(model_dir, tokens):
    """Mean over heads/steps of the largest attention probability (how peaked attention is)."""
    hf = load(model_dir)
    with torch.no_grad():
        out = hf(input_ids=torch.tensor([tokens]), output_attentions=True, use_cache=False)
    return [a[0].max(-1).values[:, 32:].mean().item() for a in out.attentions]


def self_test():
    """Hand-checked examples of the selection rules (docs/reference-implementation.md)."""
    toks = [9] * 40
    for q in (5, 7, 8, 11):
        toks[q] = 1                                       # separators at 5, 7, 8, 11
    sc = {q: 0.0 for q in range(40)}
    sc.update({5: 3.0, 6: 2.0, 9: 2.0, 10: 1.0})
    score = sc.__getitem__
    st = Policy("streaming", dict(start_size=2, recent_size=3), toks)
    assert st.select("g", list(range(6)), score) == [0, 1, 3, 4, 5]
    assert st.select("g", list(range(5)), score) == list(range(5))          # L == capacity
    h = Policy("h2o", dict(start_size=2, recent_size=2, heavy_size=2), toks)
    # middle 2..9 of 0..11: 5 (3.0) first, then tie 6/9 at 2.0 -> older (6) wins
    assert h.select("g", list(range(12)), score) == [0, 1, 5, 6, 10, 11]
    lz = Policy("lazy_h2o", dict(start_size=2, recent_size=2, heavy_size=2,
                                 update_interval=3), toks)
    lz.counter = 1                                        # not a refresh step: FIFO of middle
    assert lz.select("g", list(range(7)), score) == [0, 1, 3, 4, 5, 6]
    lz.counter = 3                                        # refresh: top-2 of middle 2..9
    assert lz.select("g", list(range(12)), score) == [0, 1, 5, 6, 10, 11]
    assert lz.protected["g"] == {5, 6}
    lz.counter = 4                                        # 10 left the window, unprotected
    assert lz.select("g", [0, 1, 5, 6, 10, 11, 12], score) == [0, 1, 5, 6, 11, 12]
    lz2 = Policy("lazy_h2o", dict(start_size=1, recent_size=0, heavy_size=2,
                                  update_interval=5), toks)
    lz2.counter, lz2.protected["g"] = 1, {1, 2}
    # window 0: the new entry 3 is the only unprotected middle entry and goes first
    assert lz2.select("g", [0, 1, 2, 3], score) == [0, 1, 2]
    lz2.protected["g"] = {1, 2, 3}                        # all protected: oldest protected goes
    assert lz2.select("g", [0, 1, 2, 3], score) == [0, 2, 3]
    sp = Policy("sepllm", dict(start_size=2, separator_size=2, local_size=3, cache_size=10,
                               separators=[1]), toks)
    assert sp.select("g", list(range(10)), score) == list(range(10))       # L == c: no burst
    # L 11 > 10: middle 2..7 holds separators 5 and 7, both kept (s = 2)
    assert sp.select("g", list(range(11)), score) == [0, 1, 5, 7, 8, 9, 10]
    # middle 2..11 holds separators 5, 7, 8, 11: the two most recent (8, 11) stay
    assert sp.select("g", list(range(15)), score) == [0, 1, 8, 11, 12, 13, 14]
    u = Policy("unified", dict(start_size=2, separator_size=1, heavy_size=2, local_size=2,
                               separators=[1], update_interval=0), toks)
    # middle 2..9: separator 8 kept; candidates incl. older separators 5 and 7: 5 (3.0), 6 (2.0)
    assert u.select("g", list(range(12)), score) == [0, 1, 5, 6, 8, 10, 11]
    # 4 middle entries, no separator: heavy keeps the top 2 (all tied: oldest), size 6 < 7
    assert u.select("g", [0, 1, 2, 3, 4, 20, 21, 22], score) == [0, 1, 2, 3, 21, 22]
    lu = Policy("unified", dict(start_size=2, separator_size=1, heavy_size=2, local_size=2,
                                separators=[1], update_interval=4), toks)
    lu.counter, lu.protected["g"] = 1, {2}
    # not a refresh: separator 5 is kept, the oldest unprotected candidate (3) goes
    assert lu.select("g", list(range(8)), score) == [0, 1, 2, 4, 5, 6, 7]
    # two over capacity (after a prefill): a refresh whatever the counter; candidates 2, 3, 4, 6
    assert lu.select("g", list(range(9)), score) == [0, 1, 2, 5, 6, 7, 8]
    assert lu.protected["g"] == {2, 6}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "tests/fixtures/models/neox-peaked"))
    ap.add_argument("--out", default=str(REPO / "tests/fixtures/policies"))
    ap.add_argument("--prefix", default="", help="prefix of the case names (e.g. kjv-)")
    ap.add_argument("--n-tokens", type=int, default=700)
    ap.add_argument("--text", help="text file tokenized with the model folder's tokenizer.json "
                    "(default: synthetic ids, only sensible for the random fixture models)")
    ap.add_argument("--separators", default="15,13,32,2,28,27",
                    help="separator ids (comma separated) for the synthetic stream")
    ap.add_argument("--separator-strings", default=json.dumps(SEPARATOR_STRINGS),
                    help="with --text: JSON list of strings mapped through the tokenizer, each "
                    "alone and with a leading space, keeping those that are one token")
    ap.add_argument("--only", help="comma separated case names")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    self_test()

    model_dir = Path(args.model).resolve()
    try:
        model_rel = str(model_dir.relative_to(REPO / "tests/fixtures/models"))
    except ValueError:
        model_rel = str(model_dir.relative_to(REPO)) if model_dir.is_relative_to(REPO) \
            else str(model_dir)

    if args.text:
        from tokenizers import Tokenizer
        tk = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        text = Path(args.text).read_text(encoding="utf-8")
        tokens = tk.encode(text).ids[:args.n_tokens]
        separators = set()
        for s in json.loads(args.separator_strings):
            for variant in (s, " " + s):
                ids = tk.encode(variant).ids
                if len(ids) == 1:
                    separators.add(ids[0])
        separators = sorted(separators)
    else:
        separators = [int(x) for x in args.separators.split(",")]
        tokens = synthetic_tokens(args.n_tokens, seed=7, separators=separators, sep_prob=0.12)
    assert len(tokens) == args.n_tokens, f"text too short: {len(tokens)} tokens"
    sep_rate = sum(t in separators for t in tokens) / len(tokens)
    print(f"model {model_rel}: {len(tokens)} tokens, separators {separators} "
          f"({100 * sep_rate:.1f} % of the stream)")
    print("attention peakedness (mean max prob per layer):",
          [round(x, 3) for x in attention_stats(model_dir, tokens)])
    hf_err = check_against_hf(model_dir, tokens)

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    summary = []
    for name, pol, params, positions in case_list(separators):
        if only and name not in only:
            continue
        runs = {}
        for dt in (torch.float32, torch.float64):
            policy = Policy(pol, params, tokens)
            r = Runner(load(model_dir), dt).run(tokens, policy, positions)
            r["gaps"] = policy.gaps
            runs[dt] = r
        r32, r64 = runs[torch.float32], runs[torch.float64]
        same = r32["digests"] == r64["digests"]
        first_diff = next((i for i, (x, y) in enumerate(zip(r32["digests"], r64["digests"]))
                           if x != y), None)
        d_nll = max(abs(x - y) for x, y in zip(r32["nll"], r64["nll"]))
        gaps = r64["gaps"]
        min_gap = min(gaps) if gaps else None
        small = sum(g < 1e-4 for g in gaps)
        evictions = sum(1 for i in range(1, len(r64["sizes"]))
                        if r64["sizes"][i] <= r64["sizes"][i - 1])
        kept = {f"layer{li}_head{hh}": r64["kept"][li][hh]
                for li in range(len(r64["kept"])) for hh in range(len(r64["kept"][0]))}
        case = {
            "case": args.prefix + name,
            "model": model_rel,
            "policy": pol,
            "params": params,
            "positions": positions,
            "tokens": tokens,
            "nll": r64["nll"],
            "cache_sizes": r64["sizes"],
            "kept_final": kept,
            "info": {
                "generator": "tools/reference/policy_reference.py",
                "model_sha256": weights_sha256(model_dir),
                "nll_dtype": "float64 reference; float32 run makes identical decisions",
                "max_abs_nll_f32_vs_f64": d_nll,
                "hf_no_eviction_max_abs_logit_err_f32": hf_err,
                "mean_nll": sum(r64["nll"]) / len(r64["nll"]),
                "eviction_steps": evictions,
                "topk_selections": len(gaps),
                "min_rel_score_gap": min_gap,
                "selections_with_rel_gap_below_1e-4": small,
            },
        }
        status = "OK" if same else f"DECISIONS DIFFER f32/f64 from step {first_diff}"
        gap_s = f"{min_gap:.2e}" if min_gap is not None else "-"
        print(f"{case['case']:36s} ppl {math.exp(case['info']['mean_nll']):8.3f} "
              f"final size {r64['sizes'][-1]:4d} evict-steps {evictions:4d} "
              f"sel {len(gaps):5d} min-gap {gap_s} (<1e-4: {small}) "
              f"|dnll32| {d_nll:.1e} {status}", flush=True)
        summary.append((case["case"], same, min_gap, small))
        if not same:
            continue  # a fragile case is not written
        (out_dir / f"{case['case']}.json").write_text(json.dumps(case) + "\n")
    bad = [c for c, same, _, _ in summary if not same]
    if bad:
        print("cases not written (float32/float64 disagree):", bad)
        sys.exit(1)


if __name__ == "__main__":
    main()
