#!/usr/bin/env python3
"""Decode latency of Hugging Face transformers on the GPU, and the comparison table.

measure: a random-weight GPTNeoXForCausalLM with Pythia-2.8B's shape (written out below: the
GPU machine has no network), float16, attn_implementation="eager", the model's own KV cache.
Protocol as kvc-bench (docs/policies.md section 7): random ids in [100, vocab - 100), prefill
S - 1 tokens, feed one more, then time N single-token decode steps, each ended by
torch.cuda.synchronize(). Also measures the device copy bandwidth (for the weight floor).

report: reads kvc-bench's speed_results_<mode>.json files and the measurement above and prints
one markdown table of ms/token (medians) with the ratio transformers / kvc full cache, and the
weight-bandwidth floor.

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

MODES = ["baseline", "streaming", "h2o", "lazy_h2o", "sepllm", "unified"]


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


def report(args):
    hf = json.load(open(args.hf)) if args.hf and os.path.exists(args.hf) else None
    kvc = {}
    for mode in MODES:
        path = os.path.join(args.kvc_dir, f"speed_results_{mode}.json")
        if os.path.exists(path):
            for r in json.load(open(path))["results"]:
                kvc.setdefault(mode, {})[r["seq_length"]] = r.get(
                    "median_decode_latency_ms", r["avg_decode_latency_ms"])
    lengths = sorted({s for m in kvc.values() for s in m} |
                     ({r["seq_length"] for r in hf["results"]} if hf else set()))
    hf_ms = {r["seq_length"]: r["median_ms"] for r in hf["results"]} if hf else {}
    modes = [m for m in MODES if m in kvc]
    cell = lambda v: f"{v:.2f}" if v is not None else "-"
    print(f"\nGPU: {hf['gpu'] if hf else '?'}; ms/token, medians")
    print("| seq | " + " | ".join(f"kvc {m}" for m in modes) +
          " | transformers eager | transformers / kvc baseline |")
    print("|---" * (len(modes) + 3) + "|")
    for s in lengths:
        base = kvc.get("baseline", {}).get(s)
        ratio = f"{hf_ms[s] / base:.1f}x" if base and s in hf_ms else "-"
        print(f"| {s} | " + " | ".join(cell(kvc[m].get(s)) for m in modes) +
              f" | {cell(hf_ms.get(s))} | {ratio} |")
    if hf:
        floor = hf["weight_bytes"] / hf["copy_bandwidth"] * 1e3
        print(f"\nweight-bandwidth floor: {hf['weight_bytes'] / 1e9:.2f} GB / "
              f"{hf['copy_bandwidth'] / 1e12:.2f} TB/s (measured copy) = {floor:.2f} ms/token")
        base512 = kvc.get("baseline", {}).get(512)
        if base512:
            print(f"kvc baseline at 512: {base512 / floor:.2f}x the floor")


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
    args = ap.parse_args()
    measure(args) if args.cmd == "measure" else report(args)


if __name__ == "__main__":
    main()
