#!/usr/bin/env python3
"""Table of a run_peer_bench.sh result folder: medians over rounds (stdlib only).

  python3 tools/peer/summarize.py build-peer/peer-results/<stamp>

Bytes read per token = all weights except the input embedding, plus the one embedding row
that the token selects (norms and biases in f32, matrices in the storage type; the KV cache
is not counted). Floor = bytes per token / median read bandwidth at the same thread count,
the bandwidth being read_bw.c's best over 1, 4 and 8 concurrent streams per thread.
"""
import glob
import json
import os
import statistics
import sys

SHAPES = {"pythia-70m": (512, 6, 50304), "pythia-160m": (768, 12, 50304),
          "pythia-410m": (1024, 24, 50304), "pythia-1b": (2048, 16, 50304),
          "pythia-1.4b": (2048, 24, 50304)}
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


def kvc_ms(path):
    j = load_json(path)
    if not j or not j.get("benchmarks"):
        return None
    b = j["benchmarks"][0]
    scale = {"ms": 1.0, "us": 1e-3, "ns": 1e-6, "s": 1e3}[b["time_unit"]]
    return b["real_time"] * scale


def llama_ms(path):
    j = load_json(path)
    if not j:
        return None
    return statistics.median(j[0]["samples_ns"]) / 1e6 / j[0]["n_gen"]


def bandwidth(path):
    j = load_json(path)
    out = {}
    for b in (j or {}).get("benchmarks", []):
        t = int(b["name"].split("threads:")[1].split("/")[0])
        out[t] = b["bytes_per_second"] / 1e9
    return out


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


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=1):
    return "—" if x is None else f"{x:.{nd}f}"


def main():
    root = sys.argv[1]
    rounds = sorted(glob.glob(os.path.join(root, "round*")))
    bw = {1: [], 2: []}      # read_bw.c, best stream count: the floor
    kbw = {1: [], 2: []}     # kvc_cpu_kernels_bench ReadBandwidth (one stream per thread)
    for r in rounds:
        for t, v in read_bw(os.path.join(r, "read_bw.txt")).items():
            bw.setdefault(t, []).append(v)
        for t, v in bandwidth(os.path.join(r, "bw.json")).items():
            kbw.setdefault(t, []).append(v)
    bw_med = {t: med(v) if v else med(kbw.get(t, [])) for t, v in bw.items()}  # older runs
    loads = []
    for r in rounds:
        with open(os.path.join(r, "load.txt")) as f:
            loads += [float(line.split()[-1]) for line in f if line.strip()]

    with open(os.path.join(root, "meta.txt")) as f:
        print("".join("    " + line for line in f))
    print(f"rounds: {len(rounds)}; 1-min load average during the run: min {min(loads):.2f}, "
          f"median {statistics.median(loads):.2f}, max {max(loads):.2f}\n")
    for label, d in (("read_bw.c, best of 1/4/8 streams (floor)", bw),
                     ("kvc ReadBandwidth, 1 stream per thread", kbw)):
        print(f"read bandwidth, {label} (GB/s, median [min-max] over rounds): " + ", ".join(
            f"{t} thread{'s' if t > 1 else ''} {fmt(med(d[t]))} [{fmt(min(d[t]))}-{fmt(max(d[t]))}]"
            for t in sorted(d) if d[t]) + "\n")

    print("| model | kvc dtype | threads | kvc ms/tok | llama.cpp ms/tok (same-size type) "
          "| kvc / llama | llama.cpp BF16 ms/tok | kvc / llama BF16 | MB read/tok | floor ms "
          "| kvc / floor |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model in SHAPES:
        for p in ("f32", "bf16"):
            for t in (1, 2):
                ks = [kvc_ms(os.path.join(r, f"kvc-{model}-{p}-t{t}.json")) for r in rounds]
                if not any(k is not None for k in ks):
                    continue
                ld = "f32" if p == "f32" else "f16"
                ls = [llama_ms(os.path.join(r, f"llama-{model}-{ld}-t{t}.json")) for r in rounds]
                lb = ([llama_ms(os.path.join(r, f"llama-{model}-bf16-t{t}.json")) for r in rounds]
                      if p == "bf16" else [])
                k, l, b = med(ks), med(ls), med(lb)
                nbytes = bytes_per_token(model, p)
                floor = nbytes / 1e9 / bw_med[t] * 1e3 if bw_med.get(t) else None
                ratio = lambda a, c: None if a is None or c is None else a / c
                print(f"| {model} | {p} | {t} | {fmt(k)} | {fmt(l)} ({ld.upper()}) | "
                      f"{fmt(ratio(k, l), 2)} | {fmt(b) if p == 'bf16' else ''} | "
                      f"{fmt(ratio(k, b), 2) if p == 'bf16' else ''} | {nbytes / 1e6:.0f} | "
                      f"{fmt(floor)} | {fmt(ratio(k, floor), 2)} |")
    print("\nper-round ms/token (kvc ; llama.cpp):")
    for model in SHAPES:
        for p in ("f32", "bf16"):
            for t in (1, 2):
                ks = [kvc_ms(os.path.join(r, f"kvc-{model}-{p}-t{t}.json")) for r in rounds]
                if not any(k is not None for k in ks):
                    continue
                ld = "f32" if p == "f32" else "f16"
                ls = [llama_ms(os.path.join(r, f"llama-{model}-{ld}-t{t}.json")) for r in rounds]
                print(f"    {model} {p} t{t}: " + " ".join(fmt(x) for x in ks) + " ; "
                      + " ".join(fmt(x) for x in ls))


if __name__ == "__main__":
    main()
