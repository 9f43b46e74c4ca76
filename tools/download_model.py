#!/usr/bin/env python3
"""Downloads a GPT-NeoX / Pythia checkpoint from the Hugging Face Hub into a folder kvc loads.

    python tools/download_model.py --model EleutherAI/pythia-2.8b --output_dir pythia-2.8b-local
    python tools/download_model.py --model EleutherAI/pythia-160m --revision step143000 \\
        --output_dir pythia-160m-step143000

kvc reads weights only from safetensors files. When the chosen revision has them
(model.safetensors, or model-NNNNN-of-NNNNN.safetensors plus model.safetensors.index.json)
only those are downloaded. Older revisions (e.g. Pythia's intermediate `stepN` checkpoints)
ship only pytorch_model.bin (a Python pickle): it is then downloaded and converted to
safetensors here, on your machine, with torch + safetensors, keeping the stored dtype; the .bin
files are deleted afterwards unless --keep_bin is given.

Needs: huggingface_hub (always), torch and safetensors (only for a conversion). A token for
gated or private repositories is taken from HF_TOKEN or `huggingface-cli login`.
"""

import argparse
import json
import sys
from pathlib import Path

# Everything kvc or a user may need besides the weights.
SIDE_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog=__doc__.split("\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="EleutherAI/pythia-2.8b",
                   help="Hub repository id (default: EleutherAI/pythia-2.8b)")
    p.add_argument("--revision", default="main",
                   help="branch, tag or commit, e.g. step143000 (default: main)")
    p.add_argument("--output_dir", type=Path, default=Path("pythia-2.8b-local"),
                   help="folder to write (default: pythia-2.8b-local)")
    p.add_argument("--keep_bin", action="store_true",
                   help="keep pytorch_model*.bin after converting them to safetensors")
    return p.parse_args()


def pick_weights(files):
    """Returns (kind, weight files) for a repository listing; kind is 'safetensors' or 'bin'."""
    st = sorted(f for f in files if f.endswith(".safetensors") and "/" not in f)
    if "model.safetensors" in st:
        return "safetensors", ["model.safetensors"]
    if "model.safetensors.index.json" in files and st:
        return "safetensors", st + ["model.safetensors.index.json"]
    bins = sorted(f for f in files if f.startswith("pytorch_model") and f.endswith(".bin"))
    if "pytorch_model.bin" in bins:
        return "bin", ["pytorch_model.bin"]
    if "pytorch_model.bin.index.json" in files and bins:
        return "bin", bins + ["pytorch_model.bin.index.json"]
    return None, []


def convert_bin_to_safetensors(out_dir, keep_bin):
    """Converts pytorch_model.bin or its shards in out_dir to the safetensors layout that
    save_pretrained writes (model.safetensors, or shards plus model.safetensors.index.json)."""
    import torch
    from safetensors.torch import save_file

    index_path = out_dir / "pytorch_model.bin.index.json"
    if index_path.is_file():
        index = json.loads(index_path.read_text(encoding="utf-8"))
        shards = sorted(set(index["weight_map"].values()))
    else:
        index, shards = None, ["pytorch_model.bin"]

    weight_map = {}
    total_size = 0
    for n, shard in enumerate(shards, start=1):
        src = out_dir / shard
        dst_name = ("model.safetensors" if index is None
                    else f"model-{n:05d}-of-{len(shards):05d}.safetensors")
        print(f"converting {src.name} -> {dst_name}", flush=True)
        # weights_only: never execute code from the pickle; mmap: do not read it twice.
        try:
            state = torch.load(src, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
            state = torch.load(src, map_location="cpu", weights_only=True)
        # safetensors refuses aliased storage (e.g. tied weights): give each tensor its own.
        tensors = {name: t.detach().contiguous().clone() for name, t in state.items()}
        del state
        for name, t in tensors.items():
            weight_map[name] = dst_name
            total_size += t.numel() * t.element_size()
        save_file(tensors, str(out_dir / dst_name), metadata={"format": "pt"})
        del tensors
    if index is not None:
        new_index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
        (out_dir / "model.safetensors.index.json").write_text(
            json.dumps(new_index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if not keep_bin:
        for shard in shards:
            (out_dir / shard).unlink()
        if index is not None:
            index_path.unlink()
    print(f"converted {len(weight_map)} tensors ({total_size / 1e9:.2f} GB) to safetensors"
          + ("" if keep_bin else "; removed the .bin files"), flush=True)


def main():
    args = parse_args()
    try:
        from huggingface_hub import HfApi, hf_hub_download
    except ImportError:
        sys.exit("error: huggingface_hub is not installed "
                 "(pip install -r tools/requirements-dev.txt)")

    api = HfApi()
    files = api.list_repo_files(args.model, revision=args.revision)
    kind, weights = pick_weights(files)
    if kind is None:
        sys.exit(f"error: {args.model}@{args.revision} has neither model*.safetensors nor "
                 f"pytorch_model*.bin; files: {', '.join(sorted(files))}")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    wanted = [f for f in SIDE_FILES if f in files] + weights
    if "config.json" not in wanted:
        sys.exit(f"error: {args.model}@{args.revision} has no config.json")
    for name in wanted:
        print(f"downloading {args.model}@{args.revision}: {name}", flush=True)
        hf_hub_download(args.model, name, revision=args.revision, local_dir=args.output_dir)

    if kind == "bin":
        print(f"{args.model}@{args.revision} ships only PyTorch pickles; converting them to "
              "safetensors locally (torch + safetensors)", flush=True)
        convert_bin_to_safetensors(args.output_dir, args.keep_bin)
    print(f"done: {args.output_dir}", flush=True)


if __name__ == "__main__":
    main()
