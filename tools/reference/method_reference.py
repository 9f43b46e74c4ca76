#!/usr/bin/env python3
"""Reference of the eviction methods beyond the seed (docs/policies.md, "Beyond the seed"), and
their golden fixtures: TOVA, SnapKV, PyramidKV, KNorm, KeyDiff, Scissorhands, and Ada-KV's
adaptive allocation over H2O / lazy H2O and those methods.

Developer-only (torch + transformers from /work/venv). Written from the papers and the rules in
docs/policies.md; it shares no code with kvc's C++ and keeps its own bookkeeping: every query's
probabilities over every original position are stored, and each method's score is computed from
that full history when it is needed (a window is a slice of it, not a ring).

    /work/venv/bin/python tools/reference/method_reference.py          # neox-peaked cases
    /work/venv/bin/python tools/reference/method_reference.py --model models/kjv-mini \\
        --text data/kjv/eval/58_Hebrews.txt --prefix kjv-

Every case runs in float32 and float64 and is written only if both make identical eviction
decisions at every step; the fixture stores the float64 NLLs (same format as
policy_reference.py, read by tests/policy/golden_policy_test.cpp).
"""

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import policy_reference as base  # noqa: E402  (model loading, token streams, HF check)

REPO = base.REPO


# ----------------------------------------------------------------------------------------------
# The methods. A method sees the whole cache after a step and returns each (layer, head)'s kept
# positions. Scores come from the History below.
# ----------------------------------------------------------------------------------------------

class History:
    """Everything the engine could know after step t: per (layer, head) the probability every
    query gave every original position (0 where it did not attend it), how many keys each query
    attended, and the pre-rotary keys."""

    def __init__(self, L, H, n, D, dtype):
        self.prob = torch.zeros(L, H, n, n, dtype=dtype)   # [layer, head, query, position]
        self.visible = torch.zeros(L, H, n, dtype=torch.float64)
        self.keys = torch.zeros(L, n, H, D, dtype=dtype)
        self.t = -1

    def acc(self, l, h, pos):          # H2O: every probability since the entry arrived
        return self.prob[l, h, :self.t + 1, pos].sum(0)

    def last(self, l, h, pos):         # TOVA: the latest query's probability
        return self.prob[l, h, self.t, pos]

    def window(self, l, h, pos, w):    # SnapKV: the mean over the last w queries (sum / w)
        return self.prob[l, h, max(0, self.t - w + 1):self.t + 1, pos].sum(0) / w

    def pivotal(self, l, h, pos, w):   # Scissorhands: queries of the last w at least uniform
        q0 = max(0, self.t - w + 1)
        p = self.prob[l, h, q0:self.t + 1, pos].double()
        vis = self.visible[l, h, q0:self.t + 1, None]
        return ((p * vis) >= 1.0).sum(0).double()

    def key_norm(self, l, h, pos):     # KNorm
        return self.keys[l, pos, h].double().norm(dim=-1)

    def key_cosine(self, l, h, pos):   # KeyDiff: cosine to the mean of the unit keys now cached
        k = self.keys[l, pos, h].double()
        unit = k / k.norm(dim=-1, keepdim=True)
        mean = unit.mean(0)
        return (k @ mean) / (k.norm(dim=-1) * mean.norm())


def pyramid_budgets(heavy, beta, n_layers):
    """PyramidKV's schedule (policies.md): the bottom layer the most, integer arithmetic."""
    if n_layers == 1:
        return [heavy]
    lo = heavy // beta
    hi = 2 * heavy - lo
    step = (hi - lo) // (n_layers - 1)
    return [hi - l * step for l in range(n_layers)]


class Method:
    def __init__(self, name, params, L, H):
        self.name, self.p, self.L, self.H = name, dict(params), L, H
        p = self.p
        self.counter = 0
        self.protected = {}          # lazy: (layer, head) -> protected positions
        self.lazy_size = {}          # lazy + adaptive: (layer, head) -> size after last refresh
        self.gaps = []               # relative gap k-th vs (k+1)-th score at each top-k
        self.adaptive = p.get("allocation", "uniform") == "adaptive"
        self.per_layer = name == "tova" and p.get("granularity", "per_layer") == "per_layer"
        self.largest = name not in ("knorm", "keydiff")
        if name == "tova":
            assert p["budget"] > p["start_size"]
            self.sinks, self.recent = p["start_size"], 1
            heavy = [p["budget"] - p["start_size"] - 1] * L
        elif name in ("snapkv", "pyramidkv"):
            assert p["kernel_size"] % 2 == 1
            self.sinks, self.recent = p["start_size"], p["window"]
            heavy = [p["heavy_size"]] * L
            if name == "pyramidkv":
                heavy = pyramid_budgets(p["heavy_size"], p["beta"], L)
        elif name in ("h2o", "lazy_h2o", "knorm", "keydiff", "scissorhands"):
            self.sinks, self.recent = p["start_size"], p["recent_size"]
            heavy = [p["heavy_size"]] * L
        else:
            raise ValueError(name)
        self.heavy = heavy
        self.interval = p.get("update_interval", 0) if name == "lazy_h2o" else 0
        assert not (self.adaptive and self.per_layer)

    def keep_count(self, l):
        return self.sinks + self.recent + self.heavy[l]

    def scores(self, hist, l, h, mid):
        """Sort keys (smaller = better) of the middle positions `mid` of (l, h), one tuple each,
        without the position / head tie-breaks."""
        p = self.p
        pos = torch.tensor(mid, dtype=torch.long)
        if self.name in ("h2o", "lazy_h2o"):
            s = hist.acc(l, h, pos)
        elif self.name == "tova":
            if self.per_layer:
                s = torch.stack([hist.last(l, hh, pos) for hh in range(self.H)]).mean(0)
            else:
                s = hist.last(l, h, pos)
        elif self.name in ("snapkv", "pyramidkv"):
            raw = hist.window(l, h, pos, p["window"])
            k = p["kernel_size"]
            # Pooled along the middle only, as SnapKV / kvpress (avg_pool1d divides by k).
            if p["pooling"] == "avg":
                s = F.avg_pool1d(raw[None, None], k, stride=1, padding=k // 2,
                                 count_include_pad=True)[0, 0]
            else:
                s = F.max_pool1d(raw[None, None], k, stride=1, padding=k // 2)[0, 0]
        elif self.name == "knorm":
            s = hist.key_norm(l, h, pos)
        elif self.name == "keydiff":
            # the mean is over every entry of the cache, sinks and window included
            all_pos = torch.tensor(self.current[l][h], dtype=torch.long)
            cos = hist.key_cosine(l, h, all_pos)
            s = cos[[self.current[l][h].index(q) for q in mid]]
        elif self.name == "scissorhands":
            count = hist.pivotal(l, h, pos, p["history"])
            acc = hist.acc(l, h, pos)
            pairs = list(zip(count.tolist(), acc.tolist()))
            return [(-c, -a) for c, a in pairs], pairs
        s = s.tolist()
        return ([(-x,) for x in s] if self.largest else [(x,) for x in s]), s

    def regions(self, lst):
        L = len(lst)
        return lst[:self.sinks], lst[self.sinks:L - self.recent], lst[L - self.recent:]

    def gap(self, ranked_scores, k):
        """Records how close the k-th and (k+1)-th scores are (relative): a small gap is a
        decision that rounding could flip. Scissorhands' scores are (count, accumulated
        attention): the first component that differs counts."""
        if not 0 < k < len(ranked_scores):
            return
        a, b = ranked_scores[k - 1], ranked_scores[k]
        for x, y in (zip(a, b) if isinstance(a, tuple) else [(a, b)]):
            if x != y:
                self.gaps.append(abs(x - y) / max(abs(x), abs(y)))
                return
        self.gaps.append(0.0)  # an exact tie, settled by position

    def top(self, hist, l, h, mid, k):
        keys, raw = self.scores(hist, l, h, mid)
        order = sorted(range(len(mid)), key=lambda i: (keys[i], mid[i]))  # ties: older first
        self.gap([raw[i] for i in order], k)
        return [mid[i] for i in order[:k]]

    def step(self, hist, kept):
        """After a step: the new kept lists (age order) of every (layer, head)."""
        self.counter += 1
        self.current = kept
        out = [[list(x) for x in layer] for layer in kept]
        for l in range(self.L):
            cap = self.keep_count(l)
            if self.per_layer:
                lst = kept[l][0]
                if len(lst) > cap:
                    sinks, mid, win = self.regions(lst)
                    keep = set(sinks + win + self.top(hist, l, 0, mid, self.heavy[l]))
                    new = [q for q in lst if q in keep]
                    out[l] = [list(new) for _ in range(self.H)]
            elif self.adaptive:
                if sum(len(x) for x in kept[l]) > self.H * cap:
                    out[l] = self.adaptive_layer(hist, l, kept[l])
            else:
                for h in range(self.H):
                    if len(kept[l][h]) > cap:
                        out[l][h] = self.select_head(hist, l, h, kept[l][h])
        return out

    def refresh_now(self):
        return self.interval == 0 or self.counter % self.interval == 0

    def fifo(self, l, h, lst, target):
        """Lazy, between refreshes: drop the oldest unprotected middle entries, then the oldest
        protected ones, until the head holds `target` entries."""
        sinks, mid, win = self.regions(lst)
        prot = self.protected.setdefault((l, h), set())
        victims = [q for q in mid if q not in prot] + [q for q in mid if q in prot]
        gone = set(victims[:len(lst) - target])
        prot -= gone
        return [q for q in lst if q not in gone]

    def select_head(self, hist, l, h, lst):
        if not self.refresh_now():
            return self.fifo(l, h, lst, self.keep_count(l))
        sinks, mid, win = self.regions(lst)
        heavy = self.top(hist, l, h, mid, self.heavy[l])
        if self.interval:
            self.protected[(l, h)] = set(heavy)
        keep = set(sinks + win + heavy)
        return [q for q in lst if q in keep]

    def adaptive_layer(self, hist, l, lists):
        """Ada-KV: each head keeps its own best f = floor(floor * H) middle entries, the layer's
        other n*H - n*f heavy slots go to the best scores pooled over its heads (ties: smaller
        position, then lower head)."""
        if not self.refresh_now():
            out = []
            for h, lst in enumerate(lists):
                target = self.lazy_size.get((l, h), self.keep_count(l))
                out.append(self.fifo(l, h, lst, target) if len(lst) > target else list(lst))
            return out
        budget = self.heavy[l]
        f = math.floor(self.p["floor"] * budget + 1e-9)
        keep, pool, pool_raw = [], [], []
        for h, lst in enumerate(lists):
            sinks, mid, win = self.regions(lst)
            keys, raw = self.scores(hist, l, h, mid)
            order = sorted(range(len(mid)), key=lambda i: (keys[i], mid[i]))
            own = [mid[i] for i in order[:f]]
            keep.append(set(sinks + win + own))
            pool += [(keys[i], mid[i], h) for i in order[f:]]
            pool_raw += [raw[i] for i in order[f:]]
        slots = self.H * budget - self.H * f
        ranked = sorted(range(len(pool)), key=lambda i: pool[i])
        self.gap([pool_raw[i] for i in ranked], slots)
        picked = [pool[i] for i in ranked[:slots]]
        for _, q, h in picked:
            keep[h].add(q)
        out = []
        for h, lst in enumerate(lists):
            new = [q for q in lst if q in keep[h]]
            if self.interval:
                sinks, mid, win = self.regions(lst)
                self.protected[(l, h)] = {q for q in new if q in set(mid)}
                self.lazy_size[(l, h)] = len(new)
            out.append(new)
        return out


# ----------------------------------------------------------------------------------------------
# Decode loop: one token per step, each (layer, head) attending its own list of entries.
# ----------------------------------------------------------------------------------------------

class Runner(base.Runner):
    @torch.no_grad()
    def run(self, tokens, method, positions):
        m, H, D = self.m, self.H, self.D
        n = len(tokens)
        hist = History(self.L, H, n, D, self.dtype)
        hist_v = torch.zeros(self.L, n, H, D, dtype=self.dtype)
        kept = [[[] for _ in range(H)] for _ in range(self.L)]
        nll, sizes, digests = [], [], []
        near_threshold = 0
        for t, tok in enumerate(tokens):
            hist.t = t
            x = m.gpt_neox.embed_in(torch.tensor(tok))
            for li, layer in enumerate(m.gpt_neox.layers):
                qkv = layer.attention.query_key_value(layer.input_layernorm(x)).view(H, 3 * D)
                q, k, v = qkv[:, :D], qkv[:, D:2 * D], qkv[:, 2 * D:]
                hist.keys[li, t], hist_v[li, t] = k, v
                out = torch.zeros(H, D, dtype=self.dtype)
                for hh in range(H):
                    kept[li][hh].append(t)
                    idx = torch.tensor(kept[li][hh])
                    Lc = len(idx)
                    if positions == "shift":
                        kpos, qpos = torch.arange(Lc), torch.tensor(Lc - 1)
                    else:
                        kpos, qpos = idx, torch.tensor(t)
                    K = self.rope(hist.keys[li, idx, hh], kpos)
                    qr = self.rope(q[hh], qpos)
                    prob = torch.softmax((K @ qr) * D ** -0.5, dim=-1)
                    out[hh] = prob @ hist_v[li, idx, hh]
                    hist.prob[li, hh, t, idx] = prob
                    hist.visible[li, hh, t] = Lc
                    off = (prob.double() * Lc - 1).abs()
                    near_threshold += int(((off > 0) & (off < 1e-5)).sum())
                a = layer.attention.dense(out.reshape(-1))
                if self.parallel:
                    x = x + a + layer.mlp(layer.post_attention_layernorm(x))
                else:
                    x = x + a
                    x = x + layer.mlp(layer.post_attention_layernorm(x))
            logits = m.lm_head(m.gpt_neox.final_layer_norm(x))
            if t + 1 < n:  # before any eviction (policies.md §3)
                nll.append(-torch.log_softmax(logits, -1)[tokens[t + 1]].item())
            kept = method.step(hist, kept)
            sizes.append(len(kept[0][0]))
            digests.append(hash(tuple(tuple(x) for layer in kept for x in layer)))
        return dict(nll=nll, sizes=sizes, digests=digests, kept=kept,
                    near_threshold=near_threshold)


# ----------------------------------------------------------------------------------------------
# Cases and self-test
# ----------------------------------------------------------------------------------------------

def case_list(prefix):
    """The neox-peaked cases, or with a prefix (the embedded model) a smaller set. SnapKV's avg
    pooling on neox-peaked's peaked attention leaves near-ties (pooled sums that differ by
    probabilities of 1e-8 relative) that float32 and float64 decide differently, so avg pooling
    is pinned on the embedded model and max pooling (whose equal scores are exact copies) on
    neox-peaked."""
    S, R, HV = 4, 32, 16
    ada = dict(allocation="adaptive", floor=0.2)
    h2o = dict(start_size=S, recent_size=R, heavy_size=HV, scope="per_head", score_layers=[0],
               allocation="uniform", floor=0.2)
    tova = dict(budget=S + R + HV, start_size=S, granularity="per_layer", allocation="uniform",
                floor=0.2)
    snap = dict(window=R, kernel_size=5, pooling="avg", start_size=S, heavy_size=HV,
                allocation="uniform", floor=0.2)
    key = dict(start_size=S, recent_size=R, heavy_size=HV, allocation="uniform", floor=0.2)
    sci = dict(key, history=64)
    if prefix:
        pyr = dict(snap, beta=20)  # 4 layers: budgets 32, 22, 12, 2
        return [
            ("tova-perlayer-shift", "tova", tova, "shift"),
            ("tova-perhead-adaptive-original", "tova",
             dict(tova, granularity="per_head", **ada), "original"),
            ("snapkv-shift", "snapkv", snap, "shift"),
            ("snapkv-original", "snapkv", snap, "original"),
            ("snapkv-adaptive-shift", "snapkv", dict(snap, **ada), "shift"),
            ("snapkv-adaptive-original", "snapkv", dict(snap, **ada), "original"),
            ("pyramidkv-shift", "pyramidkv", pyr, "shift"),
            ("pyramidkv-adaptive-original", "pyramidkv", dict(pyr, **ada), "original"),
            ("knorm-original", "knorm", key, "original"),
            ("keydiff-shift", "keydiff", key, "shift"),
            ("scissorhands-original", "scissorhands", sci, "original"),
            ("h2o-adaptive-shift", "h2o", dict(h2o, **ada), "shift"),
        ]
    smax = dict(snap, pooling="max")
    pyr = dict(smax, beta=4)  # 2 layers: budgets 28, 4
    cases = []
    for pos in ("shift", "original"):
        cases += [
            (f"tova-perlayer-{pos}", "tova", tova, pos),
            (f"tova-perhead-{pos}", "tova", dict(tova, granularity="per_head"), pos),
            (f"snapkv-max-{pos}", "snapkv", smax, pos),
            (f"pyramidkv-max-{pos}", "pyramidkv", pyr, pos),
            (f"knorm-{pos}", "knorm", key, pos),
            (f"keydiff-{pos}", "keydiff", key, pos),
            (f"scissorhands-{pos}", "scissorhands", sci, pos),
            (f"h2o-adaptive-{pos}", "h2o", dict(h2o, **ada), pos),
            (f"snapkv-max-adaptive-{pos}", "snapkv", dict(smax, **ada), pos),
        ]
    cases += [
        ("snapkv-max-k7-nosinks-shift", "snapkv", dict(smax, kernel_size=7, start_size=0),
         "shift"),
        ("tova-perhead-adaptive-shift", "tova", dict(tova, granularity="per_head", **ada),
         "shift"),
        ("pyramidkv-max-adaptive-original", "pyramidkv", dict(pyr, **ada), "original"),
        ("knorm-adaptive-shift", "knorm", dict(key, **ada), "shift"),
        ("keydiff-adaptive-original", "keydiff", dict(key, **ada), "original"),
        ("scissorhands-adaptive-shift", "scissorhands", dict(sci, allocation="adaptive",
                                                             floor=0.5), "shift"),
        ("lazy-h2o-adaptive-shift", "lazy_h2o", dict(h2o, update_interval=5, **ada), "shift"),
    ]
    return cases


def self_test():
    """Hand-checked examples of the rules in docs/policies.md."""
    assert pyramid_budgets(16, 20, 4) == [32, 22, 12, 2]   # min 0, max 32, step 10
    assert pyramid_budgets(16, 4, 2) == [28, 4]
    assert pyramid_budgets(224, 20, 1) == [224]
    assert pyramid_budgets(10, 3, 4) == [17, 13, 9, 5]     # total 44 != 40: as written
    # avg pooling divides by k, neighbours outside the middle count 0; max ignores them
    raw = torch.tensor([1.0, 0.0, 0.0, 3.0], dtype=torch.float64)
    avg = F.avg_pool1d(raw[None, None], 3, 1, 1, count_include_pad=True)[0, 0].tolist()
    assert avg == [1 / 3, 1 / 3, 1.0, 1.0], avg
    mx = F.max_pool1d(raw[None, None], 3, 1, 1)[0, 0].tolist()
    assert mx == [1.0, 1.0, 3.0, 3.0], mx
    # window mean and pivotal counts on a hand-made history (1 layer, 1 head)
    h = History(1, 1, 4, 2, torch.float64)
    h.prob[0, 0, 0, 0] = 1.0
    h.prob[0, 0, 1, :2] = torch.tensor([0.6, 0.4])
    h.prob[0, 0, 2, :3] = torch.tensor([0.5, 0.2, 0.3])
    h.visible[0, 0, :3] = torch.tensor([1.0, 2.0, 3.0])
    h.t = 2
    pos = torch.tensor([0, 1, 2])
    assert torch.allclose(h.window(0, 0, pos, 2), torch.tensor([0.55, 0.3, 0.15],
                                                                dtype=torch.float64))
    assert h.pivotal(0, 0, pos, 2).tolist() == [2.0, 0.0, 0.0]   # 0.4*2 < 1, 0.3*3 < 1
    assert h.pivotal(0, 0, pos, 3).tolist() == [3.0, 0.0, 0.0]
    # Ada-KV: 2 heads, budget 2, floor 0.5 -> f = 1 own each, 2 pooled (ties: position, head)
    m = Method("h2o", dict(start_size=0, recent_size=0, heavy_size=2, allocation="adaptive",
                           floor=0.5), 1, 2)
    hh = History(1, 2, 6, 2, torch.float64)
    hh.t = 0
    hh.prob[0, 0, 0, :6] = torch.tensor([0.9, 0.8, 0.7, 0.0, 0.0, 0.0])
    hh.prob[0, 1, 0, :6] = torch.tensor([0.1, 0.7, 0.2, 0.3, 0.0, 0.0])
    lists = [[0, 1, 2], [0, 1, 2, 3]]
    m.current = [lists]
    # own: head 0 -> 0 (0.9), head 1 -> 1 (0.7); pool: 0.8 (h0 p1), 0.7 (h0 p2), 0.3, 0.2, 0.1
    assert m.adaptive_layer(hh, 0, lists) == [[0, 1, 2], [1]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "tests/fixtures/models/neox-peaked"))
    ap.add_argument("--out", default=str(REPO / "tests/fixtures/policies"))
    ap.add_argument("--prefix", default="", help="prefix of the case names (e.g. kjv-)")
    ap.add_argument("--n-tokens", type=int, default=500)
    ap.add_argument("--text", help="text file tokenized with the model folder's tokenizer.json "
                    "(default: synthetic ids, only sensible for the random fixture models)")
    ap.add_argument("--only", help="comma separated case names")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    self_test()

    model_dir = Path(args.model).resolve()
    try:
        model_rel = str(model_dir.relative_to(REPO / "tests/fixtures/models"))
    except ValueError:
        model_rel = str(model_dir.relative_to(REPO))
    if args.text:
        from tokenizers import Tokenizer
        tk = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokens = tk.encode(Path(args.text).read_text(encoding="utf-8")).ids[:args.n_tokens]
    else:
        tokens = base.synthetic_tokens(args.n_tokens, seed=11, separators=[15, 13, 32, 2, 28, 27],
                                       sep_prob=0.12)
    assert len(tokens) == args.n_tokens, f"text too short: {len(tokens)} tokens"
    hf_err = base.check_against_hf(model_dir, tokens)
    cfg = base.load(model_dir).config
    L, H = cfg.num_hidden_layers, cfg.num_attention_heads

    out_dir = Path(args.out)
    only = set(args.only.split(",")) if args.only else None
    bad = []
    for name, pol, params, positions in case_list(args.prefix):
        if only and name not in only:
            continue
        runs = {}
        for dt in (torch.float32, torch.float64):
            method = Method(pol, params, L, H)
            r = Runner(base.load(model_dir), dt).run(tokens, method, positions)
            r["gaps"] = method.gaps
            runs[dt] = r
        r32, r64 = runs[torch.float32], runs[torch.float64]
        same = r32["digests"] == r64["digests"]
        first_diff = next((i for i, (x, y) in enumerate(zip(r32["digests"], r64["digests"]))
                           if x != y), None)
        d_nll = max(abs(x - y) for x, y in zip(r32["nll"], r64["nll"]))
        gaps = r64["gaps"]
        nonzero = [g for g in gaps if g > 0]
        min_gap = min(nonzero) if nonzero else None
        evictions = sum(1 for i in range(1, len(r64["sizes"]))
                        if r64["sizes"][i] <= r64["sizes"][i - 1])
        case = {
            "case": args.prefix + name,
            "model": model_rel,
            "policy": pol,
            "params": params,
            "positions": positions,
            "tokens": tokens,
            "nll": r64["nll"],
            "cache_sizes": r64["sizes"],
            "kept_final": {f"layer{li}_head{hh}": r64["kept"][li][hh]
                           for li in range(L) for hh in range(H)},
            "info": {
                "generator": "tools/reference/method_reference.py",
                "model_sha256": base.weights_sha256(model_dir),
                "nll_dtype": "float64 reference; float32 run makes identical decisions",
                "max_abs_nll_f32_vs_f64": d_nll,
                "hf_no_eviction_max_abs_logit_err_f32": hf_err,
                "mean_nll": sum(r64["nll"]) / len(r64["nll"]),
                "eviction_steps": evictions,
                "topk_selections": len(gaps),
                "min_rel_score_gap": min_gap,
                "selections_with_rel_gap_below_1e-4": sum(0 < g < 1e-4 for g in gaps),
                "selections_settled_by_an_exact_tie": sum(g == 0 for g in gaps),
                "probabilities_within_1e-5_of_uniform_not_equal": r64["near_threshold"],
            },
        }
        status = "OK" if same else f"DECISIONS DIFFER f32/f64 from step {first_diff}"
        gap_s = f"{min_gap:.2e}" if min_gap is not None else "-"
        print(f"{case['case']:36s} ppl {math.exp(case['info']['mean_nll']):8.3f} "
              f"final size {r64['sizes'][-1]:4d} evict-steps {evictions:4d} "
              f"sel {len(gaps):5d} min-gap {gap_s} ties {len(gaps) - len(nonzero):4d} "
              f"|dnll32| {d_nll:.1e} {status}", flush=True)
        if not same:
            bad.append(case["case"])
            continue
        (out_dir / f"{case['case']}.json").write_text(json.dumps(case) + "\n")
    if bad:
        print("cases not written (float32/float64 disagree):", bad)
        sys.exit(1)


if __name__ == "__main__":
    main()
