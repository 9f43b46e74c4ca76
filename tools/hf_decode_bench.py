#!/usr/bin/env python3
"""Decode latency of Hugging Face transformers on the GPU, and the comparison table.

measure: a random-weight GPTNeoXForCausalLM with Pythia-2.8B's shape (written out below: the
GPU machine has no network), float16, attn_implementation="eager", the model's own KV cache.
Protocol as kvc-bench (docs/policies.md section 7): random ids in [100, vocab - 100), prefill
S - 1 tokens, feed one more, then time N single-token decode steps, each ended by
torch.cuda.synchronize(). Also measures the device copy bandwidth (for the weight floor).

report: reads every kvc-bench speed_results_<mode>.json in a folder and the measurement above and
prints one markdown table of ms/token (medians; modes x lengths) with the ratio transformers / kvc
for every mode, the weight-bandwidth floor, and the checks of docs/cuda.md for every mode
(results complete, baseline at 512 under 1.6 ms, compressed modes flat within 10 %, at least 10x
faster than transformers); optionally a JSON of all that and an SVG plot.

  python3 tools/hf_decode_bench.py measure --seq_lengths 512 1024 2048 4096 --out hf.json
  python3 tools/hf_decode_bench.py report --hf hf.json --kvc_dir outputs/bench
"""
import argparse
import json
import os
import statistics
import sys
import time

PYTHIA_2_8B = dict(
    hidden_size=2560, num_hidden_layers=32, num_attention_heads=32, intermediate_size=10240,
    vocab_size=50304, rotary_pct=0.25, rotary_emb_base=10000, max_position_embeddings=2048,
    layer_norm_eps=1e-5, use_parallel_residual=True, hidden_act="gelu",
    tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)

# The seed's modes first; the report takes every mode it finds.
MODES = ["baseline", "streaming", "h2o", "lazy_h2o", "sepllm", "unified", "lazy_unified"]


def copy_bandwidth(torch, n_bytes=2 << 30, reps=10):
    """Device-to-device copy bandwidth in bytes/s (read + write counted)."""
    a = torch.empty(n_bytes // 2, dtype=torch.float16, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        b.copy_(a)
    torch.cuda.synchronize()
    return 2 * n_bytes * reps / (time.perf_counter() - t0)


def measure(args):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(args.seed)
    shape = dict(PYTHIA_2_8B)
    if args.tiny:  # a dry run of the script itself (e.g. on a machine without a GPU)
        shape.update(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=256)
    config = GPTNeoXConfig(**shape)
    dev = args.device
    dtype = torch.float16 if dev == "cuda" else torch.float32
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    with torch.device(dev):
        try:  # newer transformers call it dtype, older torch_dtype
            model = GPTNeoXForCausalLM._from_config(config, dtype=dtype,
                                                    attn_implementation="eager")
        except TypeError:
            model = GPTNeoXForCausalLM._from_config(config, torch_dtype=dtype,
                                                    attn_implementation="eager")
    model.to(dtype).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(f"transformers model ready in {time.perf_counter() - t0:.1f} s "
          f"({weight_bytes / 1e9:.2f} GB of weights)", file=sys.stderr)
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    results = []
    with torch.inference_mode():
        for s in args.seq_lengths:
            ids = torch.randint(100, config.vocab_size - 100, (1, s + args.num_decode_tokens),
                                generator=gen).to(dev)
            out = model(ids[:, : s - 1], use_cache=True)
            past = out.past_key_values
            out = model(ids[:, s - 1: s], past_key_values=past, use_cache=True)
            past = out.past_key_values
            sync()
            lat = []
            for i in range(args.num_decode_tokens):
                t = time.perf_counter()
                out = model(ids[:, s + i: s + i + 1], past_key_values=past, use_cache=True)
                past = out.past_key_values
                sync()
                lat.append((time.perf_counter() - t) * 1e3)
            results.append(dict(seq_length=s, median_ms=statistics.median(lat),
                                avg_ms=statistics.fmean(lat)))
            print(f"transformers eager: seq_length {s}: {results[-1]['median_ms']:.2f} ms/token",
                  file=sys.stderr)
            del past, out
            if dev == "cuda":
                torch.cuda.empty_cache()
    bw = copy_bandwidth(torch) if dev == "cuda" else float("nan")
    gpu = torch.cuda.get_device_name() if dev == "cuda" else "cpu (dry run)"
    import transformers
    json.dump(dict(gpu=gpu, torch=torch.__version__, transformers=transformers.__version__,
                   attn_implementation=getattr(model.config, "_attn_implementation", "?"),
                   weight_bytes=weight_bytes, copy_bandwidth=bw, results=results),
              open(args.out, "w"), indent=1)


def load_kvc(kvc_dir):
    """{mode: {seq_length: median ms/token}} and the engine/model facts, from every
    speed_results_<mode>.json in kvc_dir (kvc-bench's per-mode output)."""
    kvc, facts = {}, {}
    for name in sorted(os.listdir(kvc_dir)) if os.path.isdir(kvc_dir) else []:
        if not (name.startswith("speed_results_") and name.endswith(".json")):
            continue
        try:
            d = json.load(open(os.path.join(kvc_dir, name)))
        except ValueError:
            continue
        mode = d.get("mode", name[len("speed_results_"):-len(".json")])
        for r in d.get("results", []):
            kvc.setdefault(mode, {})[r["seq_length"]] = r.get(
                "median_decode_latency_ms", r["avg_decode_latency_ms"])
        facts = dict(engine=d.get("engine", {}), model=d.get("model", {}))
    return kvc, facts


def speed_checks(kvc, hf_ms, modes, lengths, context, baseline_512_ms, flat, min_ratio):
    """The goals of docs/cuda.md, for every mode: [(mode, kind, name, ok, value)], kind one of
    results, floor (baseline at 512), flat (compressed modes), ratio (against transformers)."""
    checks = []
    for mode in list(modes) + [m for m in kvc if m not in modes]:
        if mode not in kvc:
            checks.append((mode, "results", f"{mode}: results", False, "none (failed or cut)"))
            continue
        want = [s for s in lengths if mode != "baseline" or s <= context]
        missing = [s for s in want if s not in kvc[mode]]
        checks.append((mode, "results", f"{mode}: results at {' '.join(map(str, want))}",
                       not missing, "missing " + " ".join(map(str, missing)) if missing else "all"))
    base = kvc.get("baseline", {}).get(512)
    if base is not None:
        checks.append(("baseline", "floor", f"baseline at 512 <= {baseline_512_ms} ms/token",
                       base <= baseline_512_ms, f"{base:.3f} ms"))
    for mode, by_len in kvc.items():
        if mode == "baseline" or len(by_len) < 2:
            continue
        lo, hi = min(by_len.values()), max(by_len.values())
        checks.append((mode, "flat", f"{mode}: flat within {flat:.0%} over "
                       f"{min(by_len)}..{max(by_len)}", hi <= lo * (1 + flat), f"{hi / lo:.2f}"))
    for mode, by_len in kvc.items():
        common = [s for s in by_len if s in hf_ms]
        if not common:
            continue
        worst = min(common, key=lambda s: hf_ms[s] / by_len[s])
        ratio = hf_ms[worst] / by_len[worst]
        checks.append((mode, "ratio", f"{mode}: >= {min_ratio:g}x faster than transformers "
                       "eager", ratio >= min_ratio, f"{ratio:.1f}x at {worst}"))
    return checks


def print_checks(checks, flat, min_ratio, not_judged):
    """One line per mode: its results, flatness and speed-up, each ok or FAIL with the value."""
    failed = [c for c in checks if not c[3]]
    print(f"\nchecks: {len(checks) - len(failed)} of {len(checks)} pass"
          + (f" (NOT JUDGED: {not_judged})" if not_judged else ""))
    for c in checks:
        if c[1] == "floor":
            print(f"  {'ok' if c[3] else 'FAIL'}: {c[2]}: {c[4]}")
    kinds = [("results", "results"), ("flat", f"max/min <= {1 + flat:.2f}"),
             ("ratio", f">= {min_ratio:g}x transformers (worst)")]
    by_mode = {}
    for mode, kind, _, ok, value in checks:
        by_mode.setdefault(mode, {})[kind] = f"{'ok' if ok else 'FAIL'} {value}"
    print("| mode | " + " | ".join(k[1] for k in kinds) + " |")
    print("|---" * (len(kinds) + 1) + "|")
    for mode, cells in by_mode.items():
        print(f"| {mode} | " + " | ".join(cells.get(k[0], "-") for k in kinds) + " |")


def svg_plot(path, kvc, hf_ms, title):
    """A log-log line plot of ms/token against sequence length, without dependencies."""
    series = [(m, sorted(v.items())) for m, v in kvc.items() if v]
    if hf_ms:
        series.append(("transformers eager", sorted(hf_ms.items())))
    pts = [p for _, s in series for p in s if p[1] > 0]
    if not pts:
        return False
    import math
    w, h, l, r, t, b = 760, 440, 70, 190, 40, 50
    x0, x1 = math.log2(min(p[0] for p in pts)), math.log2(max(p[0] for p in pts))
    y0, y1 = math.log10(min(p[1] for p in pts)), math.log10(max(p[1] for p in pts))
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 0.5)
    X = lambda v: l + (math.log2(v) - x0) / (x1 - x0) * (w - l - r)
    Y = lambda v: h - b - (math.log10(v) - y0) / (y1 - y0) * (h - t - b)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
              "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{l}" y="20" font-size="13">{title}</text>',
           f'<line x1="{l}" y1="{h - b}" x2="{w - r}" y2="{h - b}" stroke="black"/>',
           f'<line x1="{l}" y1="{t}" x2="{l}" y2="{h - b}" stroke="black"/>',
           f'<text x="{(l + w - r) / 2}" y="{h - 12}" text-anchor="middle">sequence length '
           f'(tokens)</text>',
           f'<text x="14" y="{(t + h - b) / 2}" transform="rotate(-90 14 {(t + h - b) / 2})" '
           f'text-anchor="middle">decode ms / token (log)</text>']
    for s in sorted({p[0] for p in pts}):
        out.append(f'<text x="{X(s):.1f}" y="{h - b + 15}" text-anchor="middle">{s}</text>')
    for e in range(math.floor(y0), math.ceil(y1) + 1):
        for m in (1, 2, 5):
            v = m * 10 ** e
            if 10 ** y0 <= v <= 10 ** y1:
                out.append(f'<text x="{l - 5}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:g}</text>'
                           f'<line x1="{l}" y1="{Y(v):.1f}" x2="{w - r}" y2="{Y(v):.1f}" '
                           f'stroke="#ddd"/>')
    for i, (name, s) in enumerate(series):
        c = colors[i % len(colors)]
        dash = ' stroke-dasharray="6 3"' if name.startswith("transformers") else ""
        line = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in s if y > 0)
        out.append(f'<polyline points="{line}" fill="none" stroke="{c}" stroke-width="1.8"'
                   f'{dash}/>')
        out.append(f'<text x="{w - r + 10}" y="{t + 14 * i + 4}" fill="{c}">{name}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return True


def report(args):
    hf = json.load(open(args.hf)) if args.hf and os.path.exists(args.hf) else None
    kvc, facts = load_kvc(args.kvc_dir)
    order = MODES + sorted(m for m in kvc if m not in MODES)
    kvc = {m: kvc[m] for m in order if m in kvc}
    hf_ms = {r["seq_length"]: r["median_ms"] for r in hf["results"]} if hf else {}
    lengths = sorted({s for m in kvc.values() for s in m} | set(hf_ms) | set(args.lengths or []))
    model = facts.get("model", {})
    engine = facts.get("engine", {})
    print(f"GPU: {hf['gpu'] if hf else '?'}; {os.path.basename(str(model.get('path', '?')))} "
          f"{engine.get('dtype', '?')} on {engine.get('backend', '?')}; decode ms/token "
          f"(medians), in brackets transformers eager / kvc")
    print("| mode | " + " | ".join(map(str, lengths)) + " |")
    print("|---" * (len(lengths) + 1) + "|")
    for mode, by_len in kvc.items():
        cells = []
        for s in lengths:
            v = by_len.get(s)
            ratio = f" ({hf_ms[s] / v:.0f}x)" if v and s in hf_ms else ""
            cells.append(f"{v:.2f}{ratio}" if v is not None else "-")
        print(f"| {mode} | " + " | ".join(cells) + " |")
    if hf:
        print("| transformers eager | " +
              " | ".join(f"{hf_ms[s]:.2f}" if s in hf_ms else "-" for s in lengths) + " |")
    if not kvc and not hf:
        print("(no results)")
    floor = None
    if hf and hf.get("copy_bandwidth") == hf.get("copy_bandwidth"):  # not NaN
        floor = hf["weight_bytes"] / hf["copy_bandwidth"] * 1e3
        print(f"\nweight-bandwidth floor: {hf['weight_bytes'] / 1e9:.2f} GB / "
              f"{hf['copy_bandwidth'] / 1e12:.2f} TB/s (measured copy) = {floor:.2f} ms/token")
        base512 = kvc.get("baseline", {}).get(512)
        if base512:
            print(f"kvc baseline at 512: {base512 / floor:.2f}x the floor")
    checks = speed_checks(kvc, hf_ms, args.modes or [], args.lengths or lengths, args.context,
                          args.baseline_512_ms, args.flat, args.min_ratio)
    if checks:
        print_checks(checks, args.flat, args.min_ratio, args.not_judged)
    if args.json:
        json.dump(dict(gpu=hf["gpu"] if hf else None, engine=engine,
                       model={k: model.get(k) for k in ("path", "weight_bytes", "dtype")},
                       kvc_ms={m: {str(s): v for s, v in sorted(b.items())}
                               for m, b in kvc.items()},
                       transformers_eager_ms={str(s): v for s, v in sorted(hf_ms.items())},
                       transformers=hf, weight_floor_ms=floor, judged=not args.not_judged,
                       checks=[dict(mode=m, kind=k, name=n, ok=o, value=v)
                               for m, k, n, o, v in checks]),
                  open(args.json, "w"), indent=1)
    if args.plot:
        title = (f"decode latency, {os.path.basename(str(model.get('path', '?')))} "
                 f"{engine.get('dtype', '?')}, {hf['gpu'] if hf else engine.get('backend', '?')}")
        if not svg_plot(args.plot, kvc, hf_ms, title):
            print("(no plot: no results)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--seq_lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    m.add_argument("--num_decode_tokens", type=int, default=32)
    m.add_argument("--seed", type=int, default=42)
    m.add_argument("--out", default="hf_decode.json")
    m.add_argument("--device", default="cuda")
    m.add_argument("--tiny", action="store_true", help="a tiny model, to check the script")
    r = sub.add_parser("report")
    r.add_argument("--hf", default=None)
    r.add_argument("--kvc_dir", required=True)
    r.add_argument("--modes", nargs="+", help="modes that should have results")
    r.add_argument("--lengths", type=int, nargs="+", help="lengths every mode should have")
    r.add_argument("--context", type=int, default=2048, help="baseline stops here")
    r.add_argument("--baseline_512_ms", type=float, default=1.6)
    r.add_argument("--flat", type=float, default=0.10, help="compressed modes: max/min - 1")
    r.add_argument("--min_ratio", type=float, default=10.0, help="transformers / kvc, every mode")
    r.add_argument("--json", help="write the table and the checks here")
    r.add_argument("--plot", help="write an SVG plot here")
    r.add_argument("--not_judged", default="", help="say why the checks do not count (dry run)")
    args = ap.parse_args()
    measure(args) if args.cmd == "measure" else report(args)


if __name__ == "__main__":
    main()
