#!/usr/bin/env python3
"""Tables of a run_peer_bench.sh result folder (stdlib only).

  python3 tools/peer/summarize.py build-peer/peer-results/<stamp>

Every ratio is computed within a round (both programs measured minutes apart, in alternating
order) and reported as the median of the rounds' ratios with their range [min-max]; the
per-round numbers follow the tables.

Decode: ms per token at DEPTH..DEPTH+GEN cached entries (medians over repetitions). Bytes read
per token = all weights except the input embedding, plus the one embedding row that the token
selects (norms and biases in f32, matrices in the storage type; the KV cache is not counted).
Floor = bytes per token / read bandwidth at the same thread count (read_bw.c, best of 1, 4 and
8 concurrent streams per thread, measured in the same round).

Prefill: tokens per second for PREFILL tokens from an empty cache; kvc without logits (as
llama-bench, which computes only the last token's) and with every token's logits (as scoring
does: the unembedding of every position).
"""
import glob
import json
import os
import statistics
import sys

SHAPES = {"pythia-70m": (512, 6, 50304), "pythia-160m": (768, 12, 50304),
          "pythia-410m": (1024, 24, 50304), "pythia-1b": (2048, 16, 50304),
          "pythia-1.4b": (2048, 24, 50304), "pythia-2.8b": (2560, 32, 50304)}
ELT = {"f32": 4, "bf16": 2, "f16": 2}


def bytes_per_token(model, dtype):
    h, layers, vocab = SHAPES[model]
    matrices = layers * (3 * h * h + h * h + 2 * 4 * h * h) + vocab * h  # + embed_out
    vectors = layers * (2 * h + 3 * h + h + 2 * h + 4 * h + h) + 2 * h    # norms + biases
    return matrices * ELT[dtype] + vectors * 4 + h * ELT[dtype]          # + one embedding row


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def kvc_results(folder):
    j = load_json(os.path.join(folder, "speed_results_baseline.json"))
    return {r["seq_length"]: r for r in (j or {}).get("results", [])}


def kvc_decode_ms(folder, depth):
    r = kvc_results(folder).get(depth + 1)
    return r["median_decode_latency_ms"] if r else None


def kvc_prefill_tps(folder, prefill):
    r = kvc_results(folder).get(prefill + 1)
    return r["prefill_tokens_per_sec"] if r else None


def llama_decode_ms(path):
    j = load_json(path)
    return None if not j else 1e3 / j[0]["avg_ts"]


def llama_prefill_tps(path):
    j = load_json(path)
    return None if not j else j[0]["avg_ts"]


def read_bw(path):
    """Best median GB/s over stream counts, per thread count, from read_bw's output."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                w = line.split()
                t, v = int(w[1]), float(w[5])
                out[t] = max(out.get(t, 0.0), v)
    except OSError:
        pass
    return out


def fmt(x, nd=1):
    return "—" if x is None else f"{x:.{nd}f}"


def spread(xs, nd=2):
    """median [min-max] of the values present."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    return f"{statistics.median(xs):.{nd}f} [{min(xs):.{nd}f}-{max(xs):.{nd}f}]"


def ratios(a, b):
    return [x / y if x is not None and y else None for x, y in zip(a, b)]


def settings(root):
    out = {"depth": 128, "gen": 64, "prefill": 512}
    with open(os.path.join(root, "meta.txt")) as f:
        for line in f:
            if line.startswith("settings:"):
                for w in line.split()[1:]:
                    k, _, v = w.partition("=")
                    if v.isdigit():
                        out[k] = int(v)
    return out


def main():
    root = sys.argv[1]
    s = settings(root)
    rounds = sorted(glob.glob(os.path.join(root, "round*")))
    loads = []
    for r in rounds:
        with open(os.path.join(r, "load.txt")) as f:
            loads += [float(line.split()[-1]) for line in f if line.strip()]
    with open(os.path.join(root, "meta.txt")) as f:
        print("".join("    " + line for line in f))
    print(f"rounds: {len(rounds)}; 1-min load average during the run: min {min(loads):.2f}, "
          f"median {statistics.median(loads):.2f}, max {max(loads):.2f}\n")
    bw = {t: [read_bw(os.path.join(r, "read_bw.txt")).get(t) for r in rounds] for t in (1, 2)}
    print("read bandwidth (read_bw.c, best of 1/4/8 streams; GB/s, median [min-max]): "
          + ", ".join(f"{t} thread{'s' if t > 1 else ''} {spread(bw[t], 1)}" for t in bw) + "\n")

    cells = []
    for model in SHAPES:
        for p in ("f32", "bf16"):
            for t in (1, 2):
                folder = lambda r, kind="kvc": os.path.join(r, f"{kind}-{model}-{p}-t{t}")
                kd = [kvc_decode_ms(folder(r), s["depth"]) for r in rounds]
                if not any(x is not None for x in kd):
                    continue
                cells.append((model, p, t, kd, folder))

    print(f"decode, ms/token at {s['depth']}..{s['depth'] + s['gen']} cached entries "
          "(ratios: median of rounds [min-max]):\n")
    print("| model | kvc dtype | threads | kvc ms | llama.cpp ms | kvc / llama | llama.cpp BF16 ms "
          "| kvc / llama BF16 | MB read/tok | floor ms | kvc / floor |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model, p, t, kd, folder in cells:
        ld = "f32" if p == "f32" else "f16"
        ll = [llama_decode_ms(os.path.join(r, f"llama-tg-{model}-{ld}-t{t}.json")) for r in rounds]
        lb = ([llama_decode_ms(os.path.join(r, f"llama-tg-{model}-bf16-t{t}.json"))
               for r in rounds] if p == "bf16" else [])
        nbytes = bytes_per_token(model, p)
        floor = [nbytes / 1e9 / b * 1e3 if b else None for b in bw[t]]
        med = lambda xs: statistics.median([x for x in xs if x is not None]) if any(
            x is not None for x in xs) else None
        print(f"| {model} | {p} | {t} | {fmt(med(kd))} | {fmt(med(ll))} ({ld.upper()}) | "
              f"{spread(ratios(kd, ll))} | {fmt(med(lb)) if lb else ''} | "
              f"{spread(ratios(kd, lb)) if lb else ''} | {nbytes / 1e6:.0f} | {fmt(med(floor))} | "
              f"{spread(ratios(kd, floor))} |")

    print(f"\nprefill of {s['prefill']} tokens, tokens/s (ratios: median of rounds [min-max]; "
          "above 1 means kvc is faster):\n")
    print("| model | kvc dtype | threads | kvc, no logits | kvc, all logits | llama.cpp "
          "| kvc no logits / llama | kvc all logits / llama | llama.cpp BF16 | kvc / llama BF16 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model, p, t, _, folder in cells:
        kp = [kvc_prefill_tps(folder(r), s["prefill"]) for r in rounds]
        ka = [kvc_prefill_tps(folder(r, "kvc-all"), s["prefill"]) for r in rounds]
        ld = "f32" if p == "f32" else "f16"
        lp = [llama_prefill_tps(os.path.join(r, f"llama-pp-{model}-{ld}-t{t}.json"))
              for r in rounds]
        lb = ([llama_prefill_tps(os.path.join(r, f"llama-pp-{model}-bf16-t{t}.json"))
               for r in rounds] if p == "bf16" else [])
        med = lambda xs: statistics.median([x for x in xs if x is not None]) if any(
            x is not None for x in xs) else None
        print(f"| {model} | {p} | {t} | {fmt(med(kp))} | {fmt(med(ka))} | {fmt(med(lp))} "
              f"({ld.upper()}) | {spread(ratios(kp, lp))} | {spread(ratios(ka, lp))} | "
              f"{fmt(med(lb)) if lb else ''} | {spread(ratios(kp, lb)) if lb else ''} |")

    print("\nper round (kvc decode ms ; llama.cpp decode ms ; kvc prefill tok/s ; llama.cpp "
          "prefill tok/s):")
    for model, p, t, kd, folder in cells:
        ld = "f32" if p == "f32" else "f16"
        ll = [llama_decode_ms(os.path.join(r, f"llama-tg-{model}-{ld}-t{t}.json")) for r in rounds]
        kp = [kvc_prefill_tps(folder(r), s["prefill"]) for r in rounds]
        lp = [llama_prefill_tps(os.path.join(r, f"llama-pp-{model}-{ld}-t{t}.json"))
              for r in rounds]
        print(f"    {model} {p} t{t}: " + " ".join(fmt(x) for x in kd) + " ; "
              + " ".join(fmt(x) for x in ll) + " ; " + " ".join(fmt(x) for x in kp) + " ; "
              + " ".join(fmt(x) for x in lp))


if __name__ == "__main__":
    main()
