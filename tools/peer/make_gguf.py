#!/usr/bin/env python3
"""Write a GPT-NeoX GGUF file with Pythia shapes and seeded random weights (developer-only).

The file feeds llama.cpp's llama-bench so that its decode speed can be compared with
kvc's `synthetic:pythia-*` models, which have the same shapes (core/src/model/config.cpp).
Weight values do not affect speed; only shapes and the storage type do.

  python make_gguf.py --model pythia-410m --dtype f16 --out /tmp/pythia-410m-f16.gguf

Needs the PyPI package `gguf` (and numpy) in a git-ignored virtualenv.
"""
import argparse
import sys

import numpy as np
import gguf

# name: (hidden, layers, heads, vocab); intermediate = 4 * hidden, rotary_pct 0.25,
# max_position_embeddings 2048, layer_norm_eps 1e-5, parallel residual: as in Pythia.
SHAPES = {
    "pythia-70m": (512, 6, 8, 50304),
    "pythia-160m": (768, 12, 12, 50304),
    "pythia-410m": (1024, 24, 16, 50304),
    "pythia-1b": (2048, 16, 8, 50304),
    "pythia-1.4b": (2048, 24, 16, 50304),
}
DTYPES = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
          "bf16": gguf.GGMLQuantizationType.BF16}


def to_storage(a, dtype):
    """Converts a float32 array to the bytes/array that the GGUF writer stores."""
    if dtype == "f32":
        return a
    if dtype == "f16":
        return a.astype(np.float16)
    # bf16: round-to-nearest-even on the top 16 bits (values here are finite)
    u = a.view(np.uint32)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16).view(np.uint8).reshape(a.shape[0], a.shape[1] * 2)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True, choices=sorted(SHAPES))
    p.add_argument("--dtype", required=True, choices=sorted(DTYPES))
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    hidden, layers, heads, vocab = SHAPES[args.model]
    ff = 4 * hidden
    head_dim = hidden // heads
    rng = np.random.default_rng(args.seed)

    # (name, numpy shape [rows, cols] = ggml ne reversed, is_matrix). Matrices use the
    # requested type; norms and biases stay f32, as llama.cpp's converter keeps them.
    tensors = [("token_embd.weight", (vocab, hidden), True)]
    for i in range(layers):
        b = f"blk.{i}."
        tensors += [
            (b + "attn_norm.weight", (hidden,), False), (b + "attn_norm.bias", (hidden,), False),
            (b + "attn_qkv.weight", (3 * hidden, hidden), True),
            (b + "attn_qkv.bias", (3 * hidden,), False),
            (b + "attn_output.weight", (hidden, hidden), True),
            (b + "attn_output.bias", (hidden,), False),
            (b + "ffn_norm.weight", (hidden,), False), (b + "ffn_norm.bias", (hidden,), False),
            (b + "ffn_up.weight", (ff, hidden), True), (b + "ffn_up.bias", (ff,), False),
            (b + "ffn_down.weight", (hidden, ff), True), (b + "ffn_down.bias", (hidden,), False),
        ]
    tensors += [("output_norm.weight", (hidden,), False), ("output_norm.bias", (hidden,), False),
                ("output.weight", (vocab, hidden), True)]

    w = gguf.GGUFWriter(args.out, "gptneox")
    w.add_name(f"synthetic {args.model} ({args.dtype})")
    w.add_context_length(2048)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_rope_dimension_count(int(head_dim * 0.25))
    w.add_layer_norm_eps(1e-5)
    w.add_parallel_residual(True)
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "bf16": gguf.LlamaFileType.MOSTLY_BF16}[args.dtype])
    # No real tokenizer: llama-bench only feeds token ids, and a "none" vocabulary with an
    # explicit size is enough for llama.cpp to size the embedding and output tensors.
    w.add_tokenizer_model("none")
    w.add_vocab_size(vocab)

    elt = {"f32": 4, "f16": 2, "bf16": 2}[args.dtype]
    for name, shape, is_matrix in tensors:
        if is_matrix:
            dt = DTYPES[args.dtype]
            nbytes = shape[0] * shape[1] * elt
            if args.dtype == "bf16":
                w.add_tensor_info(name, (shape[0], shape[1] * 2), np.dtype(np.uint8), nbytes, dt)
            else:
                np_type = {"f32": np.float32, "f16": np.float16}[args.dtype]
                w.add_tensor_info(name, shape, np.dtype(np_type), nbytes)
        else:
            w.add_tensor_info(name, shape, np.dtype(np.float32), shape[0] * 4)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    # Stream tensors one at a time so that a 4 GB f32 file never sits in memory whole.
    for name, shape, is_matrix in tensors:
        if is_matrix:
            a = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
            w.write_tensor_data(to_storage(a, args.dtype))
        elif name.endswith("norm.weight"):
            w.write_tensor_data(np.ones(shape, dtype=np.float32))
        else:
            w.write_tensor_data(np.zeros(shape, dtype=np.float32))
    w.close()
    print(f"wrote {args.out}: {args.model} {args.dtype}", file=sys.stderr)


if __name__ == "__main__":
    main()
