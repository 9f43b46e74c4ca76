#!/usr/bin/env python3
"""Trains kvc's embedded default model, models/kjv-mini (developer-only; CPU is enough).

The model is a small GPT-NeoX (Pythia-shaped) causal LM with its own byte-level BPE tokenizer,
trained on the King James Bible books listed as `train` in configs/kjv_split.toml and
evaluated on the held-out `eval` books. Prepare the text first:

    scripts/prepare_kjv.sh                      # writes data/kjv/{train.txt,eval/*.txt}
    pip install -r tools/requirements-dev.txt
    nice -n 10 python tools/train_embedded_model.py --out models/kjv-mini

Settings (all fixed here so that a rerun reproduces the committed model; see
docs/embedded-model.md):
  seed            1234 (python, numpy, torch; batch sampling uses its own torch.Generator)
  tokenizer       byte-level BPE shaped like GPT-NeoX-20B's: NFC normalizer, ByteLevel
                  pre-tokenizer (add_prefix_space false, GPT-2 regex), ByteLevel decoder;
                  <|endoftext|> = id 0, <|padding|> = id 1; 3000 entries including the 256
                  byte symbols; trained on train.txt only
  model           GPTNeoXForCausalLM: hidden 256, 4 layers, 4 heads (head_dim 64),
                  intermediate 1024, gelu, rotary_pct 0.25 (16 rotary dims), rotary base
                  10000, parallel residual, untied embeddings, max positions 2048,
                  vocab_size 3072 (tokenizer padded to a multiple of 128 like Pythia)
  training        documents = books, each followed by <|endoftext|>; random windows of
                  512 tokens from the concatenated stream, batch 8, 250 steps; AdamW
                  (betas 0.9/0.95, weight decay 0.1, not on biases/LayerNorms), peak lr 2e-3,
                  linear warmup (20 steps) then cosine decay to 10 %, grad-norm clip 1.0;
                  float32; 2 threads
  evaluation      each eval file tokenized alone, cut into 512-token chunks, mean NLL over
                  all predicted tokens; compared with a unigram model fitted on train
Weights are stored in float32 (model.safetensors) with save_pretrained(safe_serialization=True).
The script also writes TRAINING.md into the output folder with the measured numbers.
"""

import argparse
import json
import math
import os
import random
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

SEED = 1234
TOKENIZER_VOCAB = 3000
SPECIAL_TOKENS = ["<|endoftext|>", "<|padding|>"]  # ids 0 and 1, as in GPT-NeoX-20B
VOCAB_MULTIPLE = 128
CONTEXT = 512

MODEL_CONFIG = dict(
    hidden_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=1024,
    hidden_act="gelu",
    rotary_pct=0.25,
    rotary_emb_base=10000,
    max_position_embeddings=2048,
    use_parallel_residual=True,
    tie_word_embeddings=False,
    layer_norm_eps=1e-5,
    initializer_range=0.02,
    attention_dropout=0.0,
    hidden_dropout=0.0,
    bos_token_id=0,
    eos_token_id=0,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO_ROOT / "data" / "kjv",
                   help="output folder of scripts/prepare_kjv.sh (default: data/kjv)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "models" / "kjv-mini",
                   help="model folder to write (default: models/kjv-mini)")
    p.add_argument("--steps", type=int, default=250, help="optimizer steps (default: 250)")
    p.add_argument("--batch", type=int, default=8, help="sequences per step (default: 8)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    p.add_argument("--warmup", type=int, default=20, help="warmup steps (default: 20)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    p.add_argument("--eval-every", type=int, default=50,
                   help="evaluate on the held-out books every N steps (0: only at the end)")
    p.add_argument("--save-interim", action="store_true",
                   help="also save the model after each intermediate evaluation")
    p.add_argument("--max-mb", type=float, default=20.0,
                   help="fail if config+weights+tokenizer exceed this many MB (default: 20)")
    return p.parse_args()


def split_books(text):
    """train.txt separates books by two blank lines (see scripts/prepare_kjv.sh)."""
    books = [b.strip("\n") + "\n" for b in re.split(r"\n\n\n+", text) if b.strip()]
    return books


def train_tokenizer(books):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        # All 256 byte symbols, so that any input (not only KJV text) can be encoded.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(books, trainer)
    assert tok.token_to_id("<|endoftext|>") == 0 and tok.token_to_id("<|padding|>") == 1
    return tok


def tokenizer_json(tok):
    """Serialises like gpt-neox-20b's tokenizer.json: merges as "left right" strings."""
    data = json.loads(tok.to_str())
    merges = data["model"]["merges"]
    if merges and isinstance(merges[0], list):
        for left, right in merges:
            assert " " not in left and " " not in right  # ByteLevel maps space to U+0120
        data["model"]["merges"] = [f"{left} {right}" for left, right in merges]
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def add_legacy_config_keys(path):
    """Recent transformers write a `rope_parameters` block; Pythia checkpoints on the Hub say
    rotary_pct / rotary_emb_base / torch_dtype. Carry both spellings, as the seed's
    transformers-4.52 folders do, so readers of either kind find their keys."""
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg.update(rotary_pct=MODEL_CONFIG["rotary_pct"],
               partial_rotary_factor=MODEL_CONFIG["rotary_pct"],
               rotary_emb_base=MODEL_CONFIG["rotary_emb_base"],
               rope_theta=MODEL_CONFIG["rotary_emb_base"],
               torch_dtype="float32")
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save(model, tok, out):
    """Writes config.json, model.safetensors and tokenizer.json; returns their total size."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    (out / "model.safetensors").chmod(0o644)  # written private; it is a published file
    add_legacy_config_keys(out / "config.json")
    (out / "tokenizer.json").write_text(tokenizer_json(tok), encoding="utf-8")
    return sum((out / f).stat().st_size
               for f in ["config.json", "model.safetensors", "tokenizer.json"])


def encode(tok, text):
    return tok.encode(text, add_special_tokens=False).ids


def evaluate(model, eval_tokens, context):
    """Mean NLL (nats/token) over all eval files, each cut into `context`-token chunks."""
    model.eval()
    total_nll, total_count = 0.0, 0
    per_file = {}
    with torch.no_grad():
        for name, ids in eval_tokens.items():
            nll, count = 0.0, 0
            for start in range(0, len(ids) - 1, context):
                chunk = torch.tensor(ids[start:start + context], dtype=torch.long)[None]
                if chunk.shape[1] < 2:
                    continue
                logits = model(chunk).logits[0, :-1].float()
                loss = torch.nn.functional.cross_entropy(logits, chunk[0, 1:], reduction="sum")
                nll += loss.item()
                count += chunk.shape[1] - 1
            per_file[name] = (nll / count, count)
            total_nll += nll
            total_count += count
    model.train()
    return total_nll / total_count, per_file


def attention_peakedness(model, ids, context):
    """Mean attention entropy per layer relative to a uniform distribution over the
    visible keys (1.0 = uniform, lower = more peaked), on one `context`-token chunk."""
    model.eval()
    model.set_attn_implementation("eager")  # sdpa does not return attention weights
    chunk = torch.tensor(ids[:context], dtype=torch.long)[None]
    with torch.no_grad():
        attns = model(chunk, output_attentions=True).attentions
    model.set_attn_implementation("sdpa")
    visible = torch.arange(1, chunk.shape[1] + 1, dtype=torch.float32)
    out = []
    for a in attns:  # [1, heads, q, k]
        p = a[0].float().clamp_min(1e-12)
        ent = -(p * p.log()).sum(-1)  # [heads, q]
        rel = ent[:, 1:] / visible[1:].log()  # skip q=0 (a single visible key)
        out.append(rel.mean().item())
    model.train()
    return out


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # tiny values must not fall into slow denormal arithmetic
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    train_path = args.data / "train.txt"
    eval_dir = args.data / "eval"
    if not train_path.is_file() or not eval_dir.is_dir():
        sys.exit(f"error: {train_path} or {eval_dir} not found; run scripts/prepare_kjv.sh first")

    t_start = time.time()
    books = split_books(train_path.read_text(encoding="utf-8"))
    print(f"{len(books)} training books", flush=True)

    tok = train_tokenizer(books)
    vocab = tok.get_vocab_size()
    padded_vocab = (vocab + VOCAB_MULTIPLE - 1) // VOCAB_MULTIPLE * VOCAB_MULTIPLE
    print(f"tokenizer: {vocab} entries, model vocab_size {padded_vocab}", flush=True)

    stream = []
    for book in books:
        stream.extend(encode(tok, book))
        stream.append(0)  # <|endoftext|> between documents
    stream = torch.tensor(stream, dtype=torch.long)
    eval_tokens = {p.name: encode(tok, p.read_text(encoding="utf-8"))
                   for p in sorted(eval_dir.glob("*.txt"))}
    n_eval = sum(len(v) for v in eval_tokens.values())
    print(f"train tokens {len(stream)}, eval tokens {n_eval}", flush=True)
    for name, ids in eval_tokens.items():
        print(f"  {name}: {len(ids)} tokens", flush=True)

    # Unigram baseline (add-one smoothing over the tokenizer's entries) for comparison.
    counts = torch.bincount(stream, minlength=vocab).double() + 1.0
    logp = (counts / counts.sum()).log()
    all_eval = torch.tensor([t for ids in eval_tokens.values() for t in ids], dtype=torch.long)
    unigram_nll = -logp[all_eval].mean().item()
    print(f"unigram baseline: nll {unigram_nll:.4f}, ppl {math.exp(unigram_nll):.2f}", flush=True)

    config = GPTNeoXConfig(vocab_size=padded_vocab, **MODEL_CONFIG)
    model = GPTNeoXForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params}", flush=True)

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))

    gen = torch.Generator().manual_seed(SEED)
    model.train()
    t_train = time.time()
    recent = []
    history = []
    for step in range(args.steps):
        starts = torch.randint(0, len(stream) - CONTEXT - 1, (args.batch,), generator=gen)
        batch = torch.stack([stream[s:s + CONTEXT + 1] for s in starts.tolist()])
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        logits = model(batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent.append(loss.item())
        if (step + 1) % 10 == 0 or step == 0:
            elapsed = time.time() - t_train
            print(f"step {step + 1}/{args.steps} loss {np.mean(recent[-10:]):.4f} "
                  f"lr {lr_at(step):.2e} {elapsed:.0f}s", flush=True)
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            nll, _ = evaluate(model, eval_tokens, CONTEXT)
            history.append((step + 1, nll))
            print(f"  eval @ {step + 1}: nll {nll:.4f} ppl {math.exp(nll):.2f}", flush=True)
            if args.save_interim:
                # A usable (if undertrained) model early, for long runs on a busy machine.
                save(model, tok, args.out)
                (args.out / "TRAINING.md").write_text(
                    f"# kjv-mini: interim checkpoint\n\nStep {step + 1} of {args.steps}; "
                    f"held-out NLL {nll:.4f} (PPL {math.exp(nll):.2f}). Training continues.\n",
                    encoding="utf-8")
    train_seconds = time.time() - t_train
    final_train_loss = float(np.mean(recent[-50:]))

    nll, per_file = evaluate(model, eval_tokens, CONTEXT)
    history.append((args.steps, nll))
    longest = max(eval_tokens, key=lambda k: len(eval_tokens[k]))
    peaked = attention_peakedness(model, eval_tokens[longest], CONTEXT)
    print(f"final train loss (mean of last 50 steps) {final_train_loss:.4f}", flush=True)
    print(f"held-out: nll {nll:.4f} ppl {math.exp(nll):.2f} "
          f"(unigram ppl {math.exp(unigram_nll):.2f})", flush=True)
    for name, (f_nll, count) in per_file.items():
        print(f"  {name}: {count} predicted tokens, ppl {math.exp(f_nll):.2f}", flush=True)
    print("relative attention entropy per layer: " + ", ".join(f"{x:.3f}" for x in peaked),
          flush=True)

    size = save(model, tok, args.out)
    core = ["config.json", "model.safetensors", "tokenizer.json"]
    print(f"saved to {args.out}: {size} bytes in {', '.join(core)}", flush=True)
    if size > args.max_mb * 1e6:
        sys.exit(f"error: model folder is {size} bytes, above the {args.max_mb} MB limit")

    total_seconds = time.time() - t_start
    command = "python " + " ".join(shlex.quote(a) for a in [
        os.path.relpath(__file__, REPO_ROOT)] + sys.argv[1:])
    lines = [
        "# kjv-mini: training record",
        "",
        "Written by tools/train_embedded_model.py at the end of the run that produced the",
        "weights in this folder. See docs/embedded-model.md for the design.",
        "",
        f"- Command (from the repo root, after `scripts/prepare_kjv.sh`): `nice -n 10 {command}`",
        f"- Seed: {SEED}; torch {torch.__version__}; threads {args.threads}",
        f"- Tokenizer: byte-level BPE, {vocab} entries; model vocab_size {padded_vocab}",
        f"- Model: {json.dumps(MODEL_CONFIG)}",
        f"- Parameters: {n_params} (float32); folder (config + weights + tokenizer): "
        f"{size} bytes",
        f"- Training: {args.steps} steps x {args.batch} x {CONTEXT} tokens "
        f"({args.steps * args.batch * CONTEXT} tokens seen; {len(stream)} train tokens), "
        f"peak lr {args.lr}, warmup {args.warmup}",
        f"- Training time: {train_seconds:.0f} s (whole script {total_seconds:.0f} s)",
        f"- Final train loss (mean of the last 50 steps): {final_train_loss:.4f} nats/token",
        f"- Held-out ({len(eval_tokens)} files, {n_eval} tokens, {CONTEXT}-token chunks): "
        f"NLL {nll:.4f}, PPL {math.exp(nll):.2f}; unigram baseline PPL "
        f"{math.exp(unigram_nll):.2f}",
        "- Held-out NLL during training: " + ", ".join(
            f"step {s}: {v:.4f}" for s, v in history),
        "- Relative attention entropy per layer (1 = uniform) on the first "
        f"{CONTEXT} tokens of {longest}: " + ", ".join(f"{x:.3f}" for x in peaked),
        "",
        "| eval file | tokens | PPL |",
        "|---|---:|---:|",
    ]
    for name, (f_nll, count) in per_file.items():
        lines.append(f"| {name} | {len(eval_tokens[name])} | {math.exp(f_nll):.2f} |")
    (args.out / "TRAINING.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"done in {total_seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
