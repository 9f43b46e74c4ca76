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
  training        stage 1 (language): documents = books, each followed by <|endoftext|>;
                  random windows of 512 tokens from the concatenated stream, batch 8,
                  250 steps; AdamW (betas 0.9/0.95, weight decay 0.1, not on
                  biases/LayerNorms), peak lr 2e-3, linear warmup (20 steps) then cosine
                  decay to 10 %, grad-norm clip 1.0; float32; 2 threads
                  stage 2 (induction): 300 steps x 128 rows of 32 tokens, spans of 3-8
                  distinct digits repeated 2-4 times; AdamW (weight decay 0.1), lr 2e-3
                  stage 3 (retrieval): 600 steps x (3 KJV windows, 2 rows of digit-string
                  copies over filler gaps, 3 rows of passkey/needle/copy instances in
                  kvc-eval's formats) x 512 tokens; no loss on tokens nothing predicts;
                  AdamW (weight decay 0.1), lr 1e-3
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
# Stages 2 and 3 (after the 250 KJV steps): see induction_stage and retrieval_stage.
INDUCTION_STEPS = 300
INDUCTION_ROWS = 128
INDUCTION_CONTEXT = 32
INDUCTION_LR = 2e-3
RETRIEVAL_STEPS = 600
RETRIEVAL_ROWS = (3, 2, 3)  # KJV windows, digit-copy rows, task rows per step
RETRIEVAL_LR = 1e-3

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
    p.add_argument("--induction-steps", type=int, default=INDUCTION_STEPS,
                   help="stage 2: steps on short repeated digit spans, which form the copy "
                   f"(induction) heads (default: {INDUCTION_STEPS}; 0 skips stages 2 and 3)")
    p.add_argument("--retrieval-steps", type=int, default=RETRIEVAL_STEPS,
                   help="stage 3: steps mixing KJV windows, digit copies over filler gaps and "
                   f"passkey/needle/copy instances (default: {RETRIEVAL_STEPS})")
    p.add_argument("--task-eval", action="store_true",
                   help="also measure the tasks (full context) at each evaluation of stage 3")
    p.add_argument("--init", type=Path, help=argparse.SUPPRESS)  # experiments: start from a model
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


# ---- synthetic retrieval and copy sequences ----------------------------------------------------
# The formats of hosts/eval/tasks.cpp (passkey, RULER-style needle, copy), with the same
# templates, filler sentences, digit counts and question wording; the numbers, keys, spans,
# lengths, depths and KJV filler lines (from the training books only) are drawn here from the
# script's own seeded generator, so no training instance is an evaluation instance.

PASSKEY_INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and "
                 "memorize it. I will quiz you about the important information there.")
NEEDLE_INTRO = ("Some special magic numbers are hidden within the following text. Make sure to "
                "memorize it. I will quiz you about the numbers afterwards.")
REPEAT_UNITS = [" The grass is green.", " The sky is blue.", " The sun is yellow.",
                " Here we go.", " There and back again."]
ADJECTIVES = ["silent", "golden", "ancient", "bright", "hidden", "narrow", "gentle", "bitter",
              "frozen", "hollow", "crimson", "distant", "humble", "restless", "velvet", "wooden",
              "scarlet", "tender", "weary", "radiant"]
NOUNS = ["river", "lantern", "harbor", "meadow", "falcon", "orchard", "compass", "glacier",
         "thistle", "beacon", "canyon", "willow", "anchor", "ember", "garnet", "pebble", "quarry",
         "saddle", "tunnel", "violin"]


class Filler:
    """The haystack: units laid out in order, cyclically (tasks.h's Filler)."""

    def __init__(self, name, units, lines, random_start):
        self.name, self.units, self.lines, self.random_start = name, units, lines, random_start


def repeat_filler(tok):
    return Filler("repeat", [encode(tok, s) for s in REPEAT_UNITS], False, False)


def text_filler(tok, text, name):
    units = [encode(tok, line + "\n") for line in text.split("\n") if line.strip(" \t\r")]
    return Filler(name, units, True, True)


def as_piece(filler, sentence):
    return sentence + "\n" if filler.lines else " " + sentence


def lay_out(filler, head, needles, tail, length, rng):
    """tasks.cpp's lay_out: head, filler units while they fit, the needles (ids, depth) at the
    unit boundaries nearest to their depths, then tail. Returns (ids, needle starts)."""
    fixed = len(head) + len(tail) + sum(len(n) for n, _ in needles)
    budget = length - fixed
    if budget < 0:
        raise ValueError(f"{length} tokens cannot hold the fixed parts ({fixed})")
    unit = rng.randrange(len(filler.units)) if filler.random_start else 0
    units, offsets, used = [], [0], 0
    while True:
        u = filler.units[unit]
        unit = (unit + 1) % len(filler.units)
        if used + len(u) > budget:
            break
        units.append(u)
        used += len(u)
        offsets.append(used)
    at = [min(range(len(offsets)), key=lambda b: (abs(offsets[b] - d * used), b))
          for _, d in needles]
    out, starts = list(head), [0] * len(needles)

    def place(boundary):
        for i, (ids, _) in enumerate(needles):
            if at[i] == boundary:
                starts[i] = len(out)
                out.extend(ids)

    for b, u in enumerate(units):
        place(b)
        out.extend(u)
    place(len(units))
    out.extend(tail)
    return out, starts


def random_number(rng, digits):
    return str(rng.randrange(10 ** (digits - 1), 10 ** digits))


def distinct(draw, count):
    out = []
    while len(out) < count:
        v = draw()
        if v not in out:
            out.append(v)
    return out


def make_passkey(tok, filler, length, depth, rng):
    """Returns (prompt ids, answer ids, mask): mask[i] False for prompt tokens that cannot be
    predicted (the first copy of the key's digits)."""
    key = random_number(rng, 5)
    head = encode(tok, PASSKEY_INTRO + "\n" if filler.lines else PASSKEY_INTRO)
    needle = encode(tok, as_piece(filler, f"The pass key is {key}. Remember it. {key} is the "
                                          "pass key."))
    tail = encode(tok, ("" if filler.lines else " ") + "What is the pass key? The pass key is")
    prompt, starts = lay_out(filler, head, [(needle, depth)], tail, length, rng)
    prefix = encode(tok, ("" if filler.lines else " ") + "The pass key is")
    hidden = range(starts[0] + len(prefix), starts[0] + len(prefix) + 1 + len(key))
    return prompt, encode(tok, " " + key + "."), hidden


def make_needle(tok, filler, variant, length, depth, rng):
    n_keys = rng.randint(2, 4) if variant == "multikey" else 1
    n_values = rng.randint(2, 4) if variant == "multivalue" else 1
    keys = distinct(lambda: f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}", n_keys)
    total = max(n_keys, n_values)
    values = distinct(lambda: random_number(rng, 7), total)
    query = keys[0]
    needles = []
    for i in range(total):
        k = keys[i] if variant == "multikey" else query
        text = as_piece(filler, f"One of the special magic numbers for {k} is: {values[i]}.")
        needles.append((encode(tok, text), depth if i == 0 else rng.random()))
    if variant == "multivalue":
        question = (f"What are all the special magic numbers for {query} mentioned in the "
                    f"provided text? The special magic numbers for {query} mentioned in the "
                    "provided text are")
    else:
        question = (f"What is the special magic number for {query} mentioned in the provided "
                    f"text? The special magic number for {query} mentioned in the provided "
                    "text is")
    head = encode(tok, NEEDLE_INTRO + "\n" if filler.lines else NEEDLE_INTRO)
    tail = encode(tok, question if filler.lines else " " + question)
    prompt, starts = lay_out(filler, head, needles, tail, length, rng)
    hidden = []  # each needle's " " and 7 digits
    for i, s in enumerate(starts):
        k = keys[i] if variant == "multikey" else query
        pre = len(encode(tok, ("" if filler.lines else " ") +
                         f"One of the special magic numbers for {k} is:"))
        hidden.extend(range(s + pre, s + pre + 8))
    order = sorted(range(total), key=lambda i: starts[i])
    if variant == "multivalue":
        answer = " " + ", ".join(values[i] for i in order) + "."
    else:
        answer = " " + values[0] + "."
    return prompt, encode(tok, answer), hidden


def append_filler(prompt, filler, gap, rng):
    """Exactly `gap` filler tokens, units in order from a random one (text) or the first."""
    unit = rng.randrange(len(filler.units)) if filler.random_start else 0
    left = gap
    while left > 0:
        u = filler.units[unit]
        unit = (unit + 1) % len(filler.units)
        prompt.extend(u[:left])
        left -= min(left, len(u))


def make_copy(tok, filler, pool, span, gap, rng):
    """tasks.cpp's make_copy: "\\n>>" + span distinct pool ids + exactly `gap` filler tokens +
    "\\n>>"; the answer is the span."""
    return copy_of(tok, filler, distinct(lambda: rng.choice(pool), span), gap, rng)


def copy_of(tok, filler, ids, gap, rng):
    """make_copy's layout for given ids: "\\n>>" + ids + `gap` filler tokens + "\\n>>"."""
    marker = encode(tok, "\n>>")
    prompt = marker + ids
    append_filler(prompt, filler, gap, rng)
    prompt.extend(marker)
    return prompt, ids, range(len(marker), len(marker) + len(ids))


def word_pool(tok, vocab):
    """tasks.cpp's word_pool: tokens that decode to a space then 3+ letters... (len >= 3)."""
    pool = []
    for i in range(vocab):
        s = tok.decode([i])
        if len(s.encode()) >= 3 and s[0] == " " and s[1:].isascii() and s[1:].isalpha():
            pool.append(i)
    return pool


# Shares of the synthetic instances (they are drawn independently for each slot of a row).
TASK_MIX = [("passkey", 0.45), ("needle_single", 0.20), ("needle_multikey", 0.10),
            ("needle_multivalue", 0.05), ("copy", 0.20)]


def make_instance(tok, task, filler, pool, room, rng):
    """One instance of `task` that fits in `room` tokens (prompt + answer), or None.
    Returns (ids, hidden, n_answer): hidden are the indices of ids whose value cannot be
    predicted; the last n_answer ids are the answer."""
    if task == "copy":
        span = rng.randint(8, 24)
        if room < 2 * span + 8 + 1:
            return None
        most = min(room - 2 * span - 8, CONTEXT - 2 * span - 8)
        gap = min(most, int(math.exp(rng.uniform(0, math.log(CONTEXT)))) - 1)
        prompt, answer, hidden = make_copy(tok, filler, pool, span, gap, rng)
    else:
        make = (lambda length, depth: make_passkey(tok, filler, length, depth, rng)) \
            if task == "passkey" else \
            (lambda length, depth: make_needle(tok, filler, task.split("_")[1], length, depth,
                                               rng))
        minimum = 120 if task in ("passkey", "needle_single") else 220
        if room < minimum + 24:
            return None
        top = min(room, CONTEXT) - 24
        length = min(top, int(math.exp(rng.uniform(math.log(minimum), math.log(top + 1)))))
        try:
            prompt, answer, hidden = make(length, rng.random())
        except ValueError:  # the fixed parts (several needles) need more room
            return None
    ids = prompt + answer
    return (ids, list(hidden), len(answer)) if len(ids) <= room else None


def synthetic_row(tok, fillers, pool, stream, rng, mix=TASK_MIX):
    """A training row of CONTEXT + 1 tokens: instances, each followed by <|endoftext|>, packed
    from the row's start; the rest is a KJV window. Returns (ids, hidden positions, answer
    positions)."""
    row, hidden, answers = [], [], []
    names, weights = zip(*mix)
    while True:
        room = CONTEXT + 1 - len(row) - 1  # keep one token for <|endoftext|>
        task = rng.choices(names, weights)[0]
        made = make_instance(tok, task, rng.choice(fillers), pool, room, rng)
        if made is None:
            break
        ids, h, n_answer = made
        hidden.extend(len(row) + i for i in h)
        answers.extend(range(len(row) + len(ids) - n_answer, len(row) + len(ids)))
        row.extend(ids)
        row.append(0)
    rest = CONTEXT + 1 - len(row)
    if rest > 0:
        s = rng.randrange(len(stream) - rest)
        row.extend(stream[s:s + rest].tolist())
    return row, hidden, answers


def digit_copy_row(tok, fillers, stream, digits, rng, max_gap=300):
    """A stage-3 row of CONTEXT + 1 tokens: copies of strings of 3-8 digits over filler gaps of
    0..max_gap tokens (make_copy's format), each followed by <|endoftext|>, then a KJV window.
    Half the strings have distinct digits (the next digit follows from the current one, as
    stage 2 taught), half are random like the passkeys. Returns (ids, hidden positions, answer
    positions)."""
    row, hidden, answers = [], [], []
    while True:
        span = rng.randint(3, 8)
        gap = int(math.exp(rng.uniform(0, math.log(max_gap + 1)))) - 1
        if 2 * span + gap + 6 > CONTEXT - len(row):
            break
        filler = rng.choice(fillers)
        if rng.random() < 0.5:
            prompt, answer, h = make_copy(tok, filler, digits, span, gap, rng)
        else:  # digits may repeat, as in the passkeys: the next digit needs two to match
            number = [rng.choice(digits) for _ in range(span)]
            prompt, answer, h = copy_of(tok, filler, number, gap, rng)
        hidden.extend(len(row) + i for i in h)
        answers.extend(len(row) + len(prompt) + i for i in range(len(answer)))
        row.extend(prompt + answer + [0])
    rest = CONTEXT + 1 - len(row)
    s = rng.randrange(len(stream) - rest)
    row.extend(stream[s:s + rest].tolist())
    return row, hidden, answers


def masked_step(model, opt, rows, hidden_rows, answer_rows, lr):
    """One AdamW step on rows of CONTEXT + 1 ids, with no loss on the hidden positions (tokens
    nothing before them can predict). Returns (per-token loss [rows, CONTEXT], answers mask)."""
    batch = torch.tensor(rows, dtype=torch.long)
    target = batch[:, 1:].clone()
    answers = torch.zeros_like(target, dtype=torch.bool)
    for r, (hidden, answer) in enumerate(zip(hidden_rows, answer_rows)):
        target[r, [h - 1 for h in hidden if h >= 1]] = -100
        answers[r, [a - 1 for a in answer]] = True
    for group in opt.param_groups:
        group["lr"] = lr
    logits = model(batch[:, :-1]).logits
    token_loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
        reduction="none").reshape(target.shape)
    counted = (target != -100).float()
    loss = (token_loss * counted).sum() / counted.sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return token_loss.detach(), answers


def induction_stage(model, tok, steps, seed=SEED + 3):
    """Stage 2: rows of INDUCTION_CONTEXT tokens, each a span of 3-8 distinct digits repeated
    2-4 times, over and over. Induction heads do not form in 512-token rows (KJV-only or with
    sparse synthetic rows, see docs/embedded-model.md): at the start every key gets about
    1/512 of the attention, so the gradient towards the one right key is tiny. In 32-token
    rows it gets about 1/32 and the heads form within a few hundred steps. The language
    model suffers (it sees only digits here); stage 3 restores it."""
    rng = random.Random(seed)
    digits = [tok.token_to_id(str(d)) for d in range(10)]
    opt = torch.optim.AdamW(model.parameters(), lr=INDUCTION_LR, betas=(0.9, 0.95),
                            weight_decay=0.1)
    model.train()
    t0 = time.time()
    recent = []
    for step in range(steps):
        rows, repeats = [], []
        for _ in range(INDUCTION_ROWS):
            row, repeat = [], []
            while len(row) < INDUCTION_CONTEXT + 1:
                span = rng.randint(3, 8)
                seq = rng.sample(digits, span)
                for copy in range(rng.randint(2, 4)):
                    row.extend(seq)
                    repeat.extend([copy > 0] * span)
            rows.append(row[:INDUCTION_CONTEXT + 1])
            repeats.append(repeat[1:INDUCTION_CONTEXT + 1])
        batch = torch.tensor(rows, dtype=torch.long)
        for group in opt.param_groups:
            group["lr"] = INDUCTION_LR * min(1.0, (step + 1) / 10)
        logits = model(batch[:, :-1]).logits
        token_loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
            reduction="none").reshape(batch.shape[0], -1)
        loss = token_loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent.append(token_loss[torch.tensor(repeats)].mean().item())
        if (step + 1) % 10 == 0 or step == 0:
            print(f"induction step {step + 1}/{steps} repeated digits "
                  f"{np.mean(recent[-10:]):.4f} {time.time() - t0:.0f}s", flush=True)
    return float(np.mean(recent[-10:]))


def retrieval_stage(model, tok, fillers, stream, pool, steps, on_eval, seed=SEED + 4):
    """Stage 3: each step RETRIEVAL_ROWS (KJV windows, digit-copy rows, task rows), at a
    constant learning rate after 10 warmup steps. The KJV windows bring the language model
    back after stage 2; the digit copies stretch the induction heads over long filler gaps;
    the task rows (passkey, needles, word-span copies in kvc-eval's formats) teach the
    prompts' answer formats. on_eval(step) runs every 50 steps and at the end."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    digits = [tok.token_to_id(str(d)) for d in range(10)]
    n_kjv, n_copy, n_task = RETRIEVAL_ROWS
    opt = torch.optim.AdamW(model.parameters(), lr=RETRIEVAL_LR, betas=(0.9, 0.95),
                            weight_decay=0.1)
    model.train()
    t0 = time.time()
    kjv_losses, answer_losses = [], []
    for step in range(steps):
        rows, hidden, answers = [], [], []
        for s in torch.randint(0, len(stream) - CONTEXT - 1, (n_kjv,), generator=gen).tolist():
            rows.append(stream[s:s + CONTEXT + 1].tolist())
            hidden.append([])
            answers.append([])
        for make in [lambda: digit_copy_row(tok, fillers, stream, digits, rng)] * n_copy + \
                [lambda: synthetic_row(tok, fillers, pool, stream, rng)] * n_task:
            ids, h, a = make()
            rows.append(ids)
            hidden.append(h)
            answers.append(a)
        lr = RETRIEVAL_LR * min(1.0, (step + 1) / 10)
        token_loss, answer_mask = masked_step(model, opt, rows, hidden, answers, lr)
        kjv_losses.append(token_loss[:n_kjv].mean().item())
        answer_losses.append(token_loss[answer_mask].mean().item())
        if (step + 1) % 10 == 0 or step == 0:
            print(f"retrieval step {step + 1}/{steps} kjv {np.mean(kjv_losses[-10:]):.4f} "
                  f"answers {np.mean(answer_losses[-10:]):.4f} {time.time() - t0:.0f}s",
                  flush=True)
        if (step + 1) % 50 == 0 or step + 1 == steps:
            on_eval(step + 1)
            model.train()
    return float(np.mean(kjv_losses[-50:])), float(np.mean(answer_losses[-50:]))


def generate_greedy(model, prompt, n):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False,
                             pad_token_id=0, eos_token_id=None)
    return out[0, len(prompt):].tolist()


def evaluate_tasks(model, tok, fillers, pool, vocab, seed=SEED + 2, samples=2):
    """Accuracy of greedy answers with the full context (passkey, single needle), and the
    copy task's teacher-forced token accuracy, on instances drawn from `seed` (not the
    training generator's). Returns {name: value}."""
    model.eval()
    rng = random.Random(seed)
    results = {}
    depths = [0.0, 0.5, 1.0]
    for task in ["passkey", "needle_single"]:
        for filler in fillers:
            right = total = 0
            for length in [128, 256, 512] if task == "passkey" else [192, 320, 512]:
                for depth in depths:
                    for _ in range(samples):
                        if task == "passkey":
                            prompt, answer, _ = make_passkey(tok, filler, length, depth, rng)
                        else:
                            prompt, answer, _ = make_needle(tok, filler, "single", length,
                                                            depth, rng)
                        out = tok.decode(generate_greedy(model, prompt, len(answer) + 1))
                        expected = re.search(r"\d+", tok.decode(answer)).group(0)
                        got = re.search(r"\d+", out)
                        right += int(got is not None and got.group(0) == expected)
                        total += 1
            results[f"{task}/{filler.name}"] = right / total
    for filler in fillers:
        right = total = 0
        for gap in [32, 128, 384]:
            for _ in range(2 * samples):
                prompt, answer, _ = make_copy(tok, filler, pool, 16, gap, rng)
                ids = torch.tensor([prompt + answer])
                with torch.no_grad():
                    logits = model(ids[:, :-1]).logits[0, len(prompt) - 1:, :vocab]
                right += (logits.argmax(-1) == ids[0, len(prompt):]).sum().item()
                total += len(answer)
        results[f"copy/{filler.name}"] = right / total
    model.train()
    return results


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

    # Synthetic task sequences: fillers from the training books only (the held-out books are
    # the evaluation's "kjv" filler), word tokens as tasks.cpp's word_pool picks them.
    train_lines = "\n".join(book for book in books)
    fillers = [repeat_filler(tok), text_filler(tok, train_lines, "kjv")]
    eval_fillers = [repeat_filler(tok),
                    text_filler(tok, "".join(p.read_text(encoding="utf-8")
                                             for p in sorted(eval_dir.glob("*.txt"))), "kjv")]
    pool = word_pool(tok, vocab)

    config = GPTNeoXConfig(vocab_size=padded_vocab, **MODEL_CONFIG)
    model = GPTNeoXForCausalLM(config)
    if args.init:
        model = GPTNeoXForCausalLM.from_pretrained(args.init)
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
        kjv_loss = loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent.append(kjv_loss)
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
    final_train_loss = float(np.mean(recent[-50:]))
    nll, _ = evaluate(model, eval_tokens, CONTEXT)
    history.append((args.steps, nll))
    print(f"stage 1 done: held-out nll {nll:.4f} ppl {math.exp(nll):.2f}", flush=True)

    stages = []
    if args.induction_steps:
        repeated = induction_stage(model, tok, args.induction_steps)
        stages.append(f"stage 2: {args.induction_steps} steps x {INDUCTION_ROWS} x "
                      f"{INDUCTION_CONTEXT} tokens of repeated digit spans, lr {INDUCTION_LR}; "
                      f"loss on the repeats (last 10 steps) {repeated:.4f}")

        def on_eval(step):
            step_nll, _ = evaluate(model, eval_tokens, CONTEXT)
            history.append((args.steps + args.induction_steps + step, step_nll))
            print(f"  eval @ retrieval {step}: nll {step_nll:.4f} ppl {math.exp(step_nll):.2f}",
                  flush=True)
            if args.task_eval and step < args.retrieval_steps:
                tasks = evaluate_tasks(model, tok, eval_fillers, pool, vocab)
                print("  tasks: " + ", ".join(f"{k} {v:.2f}" for k, v in tasks.items()),
                      flush=True)

        if args.retrieval_steps:
            kjv3, answers3 = retrieval_stage(model, tok, fillers, stream, pool,
                                             args.retrieval_steps, on_eval)
            stages.append(f"stage 3: {args.retrieval_steps} steps x {RETRIEVAL_ROWS} rows "
                          f"(KJV, digit copies, tasks) x {CONTEXT} tokens, lr {RETRIEVAL_LR}; "
                          f"KJV loss {kjv3:.4f}, answers' loss {answers3:.4f} (last 50 steps)")
    train_seconds = time.time() - t_train

    nll, per_file = evaluate(model, eval_tokens, CONTEXT)
    tasks = evaluate_tasks(model, tok, eval_fillers, pool, vocab)
    print("tasks (full context): " + ", ".join(f"{k} {v:.2f}" for k, v in tasks.items()),
          flush=True)
    longest = max(eval_tokens, key=lambda k: len(eval_tokens[k]))
    peaked = attention_peakedness(model, eval_tokens[longest], CONTEXT)
    print(f"stage 1 final train loss (mean of its last 50 steps) {final_train_loss:.4f}",
          flush=True)
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
    ] + [f"- Then {stage}" for stage in stages] + [
        f"- Training time: {train_seconds:.0f} s (whole script {total_seconds:.0f} s)",
        f"- Stage 1 final train loss (mean of its last 50 steps): {final_train_loss:.4f} "
        "nats/token",
        f"- Held-out ({len(eval_tokens)} files, {n_eval} tokens, {CONTEXT}-token chunks): "
        f"NLL {nll:.4f}, PPL {math.exp(nll):.2f}; unigram baseline PPL "
        f"{math.exp(unigram_nll):.2f}",
        "- Held-out NLL during training (steps counted over all stages): " + ", ".join(
            f"step {s}: {v:.4f}" for s, v in history),
        "- Tasks with the full context (evaluate_tasks: greedy passkey and single-needle "
        "accuracy, teacher-forced copy token accuracy): " + ", ".join(
            f"{k} {v:.2f}" for k, v in tasks.items()),
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
