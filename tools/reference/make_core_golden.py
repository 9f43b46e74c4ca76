#!/usr/bin/env python3
"""Generate the small GPT-NeoX test checkpoints and the golden logits of the core forward pass.

Developer-only: needs torch, transformers and safetensors (the /work/venv virtualenv). The
outputs are committed; tests never run this script.

    /work/venv/bin/python tools/reference/make_core_golden.py [--repo-root .]

Writes tests/fixtures/models/<name>/ (config.json + safetensors, Hugging Face layout) and
tests/fixtures/golden/<name>/ (golden.json, prefill_logits.f32, decode_logits.f32). The golden
logits are what transformers' GPTNeoXForCausalLM computes on CPU in float32 with eager attention.
Everything is seeded, single-threaded and deterministic: re-running reproduces the same bytes.
"""

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import DynamicCache, GPTNeoXConfig, GPTNeoXForCausalLM

# Tokens only use ids below this; the vocabulary is padded above it (as Pythia's 50432 > 50277).
USED_VOCAB = 100
# Scale of the Q/K projections of neox-peaked (see policy_reference.py for the measured gaps).
PEAKED_QK_SCALE = 3.0


def base_config(**overrides):
    cfg = dict(
        vocab_size=128,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        hidden_act="gelu",
        max_position_embeddings=256,
        rotary_pct=0.25,
        rotary_emb_base=10000,
        layer_norm_eps=1e-5,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        attention_bias=True,
        bos_token_id=0,
        eos_token_id=0,
        initializer_range=0.15,
    )
    cfg.update(overrides)
    return cfg


def make_model(cfg, seed, qk_scale=1.0):
    """Random model whose every parameter (biases and LayerNorm affine included) is non-trivial.

    qk_scale multiplies the Q and K rows of query_key_value so that attention can be made peaked.
    """
    config = GPTNeoXConfig(**cfg)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(config).eval()
    gen = torch.Generator().manual_seed(seed)
    std = cfg["initializer_range"]
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or "layer_norm" in name:
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(0.05 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen))
        if qk_scale != 1.0:
            for layer in model.gpt_neox.layers:
                w = layer.attention.query_key_value.weight  # rows: per head [q | k | v]
                b = layer.attention.query_key_value.bias
                for h in range(cfg["num_attention_heads"]):
                    rows = slice(3 * head_dim * h, 3 * head_dim * h + 2 * head_dim)
                    w[rows] *= qk_scale
                    b[rows] *= qk_scale
    return model


def pythia_style_config(folder: Path, cfg, dtype_name):
    """Rewrite config.json the way real Pythia checkpoints spell it (rotary_pct, rotary_emb_base,
    torch_dtype) instead of transformers 5's nested rope_parameters."""
    path = folder / "config.json"
    saved = json.loads(path.read_text())
    out = {
        "architectures": ["GPTNeoXForCausalLM"],
        "model_type": "gpt_neox",
        "bos_token_id": cfg["bos_token_id"],
        "eos_token_id": cfg["eos_token_id"],
        "hidden_act": cfg["hidden_act"],
        "hidden_size": cfg["hidden_size"],
        "initializer_range": cfg["initializer_range"],
        "intermediate_size": cfg["intermediate_size"],
        "layer_norm_eps": cfg["layer_norm_eps"],
        "max_position_embeddings": cfg["max_position_embeddings"],
        "num_attention_heads": cfg["num_attention_heads"],
        "num_hidden_layers": cfg["num_hidden_layers"],
        "rotary_emb_base": cfg["rotary_emb_base"],
        "rotary_pct": cfg["rotary_pct"],
        "tie_word_embeddings": False,
        "torch_dtype": dtype_name,
        "transformers_version": saved.get("transformers_version", ""),
        "use_cache": True,
        "use_parallel_residual": cfg["use_parallel_residual"],
        "vocab_size": cfg["vocab_size"],
    }
    path.write_text(json.dumps(out, indent=2) + "\n")


def tidy_folder(folder: Path):
    # generation_config.json is irrelevant to the engine; keep fixtures minimal.
    gen = folder / "generation_config.json"
    if gen.exists():
        gen.unlink()


def add_legacy_buffers(folder: Path, cfg):
    """Add the buffers old Pythia checkpoints carry in their state dict (the engine must ignore
    them): attention.bias (bool causal mask), attention.masked_bias (scalar), rotary inv_freq."""
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    n = cfg["max_position_embeddings"]
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    rot = int(head_dim * cfg["rotary_pct"])
    inv_freq = 1.0 / (cfg["rotary_emb_base"] ** (torch.arange(0, rot, 2).float() / rot))
    for i in range(cfg["num_hidden_layers"]):
        pre = f"gpt_neox.layers.{i}.attention."
        tensors[pre + "bias"] = torch.tril(torch.ones(n, n, dtype=torch.bool)).view(1, 1, n, n)
        tensors[pre + "masked_bias"] = torch.tensor(-1e9)
        tensors[pre + "rotary_emb.inv_freq"] = inv_freq.clone()
    save_file(tensors, str(path), metadata={"format": "pt"})


def write_f32(path: Path, arr: torch.Tensor):
    np.ascontiguousarray(arr.detach().cpu().numpy().astype("<f4")).tofile(path)


@torch.no_grad()
def golden(model, tokens):
    ids = torch.tensor([tokens])
    prefill = model(input_ids=ids, use_cache=False).logits[0]
    cache = DynamicCache(config=model.config)
    rows = []
    for t in tokens:
        out = model(input_ids=torch.tensor([[t]]), cache=cache, use_cache=True)
        cache = out.cache
        rows.append(out.logits[0, -1])
    decode = torch.stack(rows)
    return prefill, decode


def load_back(folder: Path):
    """Load a fixture folder with transformers, upcast to float32, eager attention."""
    model = GPTNeoXForCausalLM.from_pretrained(
        str(folder), dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    # Guard against silent re-initialisation: every parameter must equal the stored tensor.
    stored = {}
    for f in sorted(folder.glob("*.safetensors")):
        stored.update(load_file(str(f)))
    for k, v in model.state_dict().items():
        if "rotary_emb" in k:
            continue
        # Pythia (and transformers' save_pretrained) name the output projection embed_out.
        sk = "embed_out.weight" if k == "lm_head.weight" else k
        assert sk in stored, f"{folder}: {sk} missing"
        assert torch.equal(v, stored[sk].float()), f"{folder}: {sk} differs from stored"
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    rot = int(head_dim * cfg.rope_parameters["partial_rotary_factor"])
    base = cfg.rope_parameters["rope_theta"]
    want = 1.0 / (base ** (torch.arange(0, rot, 2).float() / rot))
    assert torch.allclose(model.gpt_neox.rotary_emb.inv_freq, want), folder
    return model


def write_golden(root: Path, name: str, model, tokens, notes):
    gdir = root / "tests/fixtures/golden" / name
    if gdir.exists():
        shutil.rmtree(gdir)
    gdir.mkdir(parents=True)
    prefill, decode = golden(model, tokens)
    write_f32(gdir / "prefill_logits.f32", prefill)
    write_f32(gdir / "decode_logits.f32", decode)
    gap = (prefill - decode).abs().max().item()
    meta = {
        "model": name,
        "tokens": tokens,
        "n_tokens": len(tokens),
        "vocab_size": model.config.vocab_size,
        "prefill_logits_file": "prefill_logits.f32",
        "decode_logits_file": "decode_logits.f32",
        "layout": "little-endian float32, row-major [n_tokens, vocab_size]",
        "reference_max_abs_prefill_minus_decode": gap,
        "logits_max_abs": prefill.abs().max().item(),
        "logits_std": prefill.std().item(),
        "notes": notes,
    }
    (gdir / "golden.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{name}: {len(tokens)} tokens, |prefill-decode| max {gap:.3g}, "
          f"logit std {meta['logits_std']:.3f}")
    return prefill


def fixed_tokens(n, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, USED_VOCAB, (n,), generator=gen).tolist()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo-root", default=str(Path(__file__).resolve().parents[2]))
    args = ap.parse_args()
    root = Path(args.repo_root)
    models_dir = root / "tests/fixtures/models"
    models_dir.mkdir(parents=True, exist_ok=True)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    def fresh(name):
        d = models_dir / name
        if d.exists():
            shutil.rmtree(d)
        return d

    # --- neox-par-r25: Pythia-like layout, plus the legacy buffers the loader must ignore.
    cfg = base_config()
    model = make_model(cfg, seed=1)
    d = fresh("neox-par-r25")
    model.save_pretrained(str(d), safe_serialization=True)
    tidy_folder(d)
    pythia_style_config(d, cfg, "float32")
    add_legacy_buffers(d, cfg)
    toks = fixed_tokens(24, seed=101)
    ref = write_golden(root, "neox-par-r25", load_back(d), toks,
                       "parallel residual, rotary_pct 0.25; safetensors include legacy buffers "
                       "attention.bias/masked_bias/rotary_emb.inv_freq that must be ignored")
    base_state = {k: v.clone() for k, v in model.state_dict().items()}

    # --- neox-sharded: same weights, several safetensors shards plus the index.
    d = fresh("neox-sharded")
    model.save_pretrained(str(d), safe_serialization=True, max_shard_size="150KB")
    tidy_folder(d)
    pythia_style_config(d, cfg, "float32")
    shards = sorted(p.name for p in d.glob("model-*.safetensors"))
    assert (d / "model.safetensors.index.json").exists() and len(shards) >= 2, shards
    sharded = load_back(d)
    out = write_golden(root, "neox-sharded", sharded, toks,
                       f"weights identical to neox-par-r25, split over {len(shards)} shards")
    assert torch.equal(out, ref)

    # --- neox-f16 / neox-bf16: weights stored in half precision; golden computed in float32 from
    # exactly those stored values (so only compute precision differs between engine and golden).
    for name, dt, dname in (("neox-f16", torch.float16, "float16"),
                            ("neox-bf16", torch.bfloat16, "bfloat16")):
        m = make_model(cfg, seed=1)
        m.load_state_dict(base_state)
        m = m.to(dt)
        d = fresh(name)
        m.save_pretrained(str(d), safe_serialization=True)
        tidy_folder(d)
        pythia_style_config(d, cfg, dname)
        stored = load_file(str(d / "model.safetensors"))
        assert all(v.dtype == dt for v in stored.values())
        write_golden(root, name, load_back(d), toks,
                     f"neox-par-r25 weights rounded to {dname}; golden = float32 compute on the "
                     f"upcast stored weights")

    # --- neox-seq-r100: sequential residual, full rotary, 3 layers. Its config.json is left as
    # transformers 5 writes it (nested rope_parameters), the other spelling loaders must accept.
    cfg = base_config(use_parallel_residual=False, rotary_pct=1.0, num_hidden_layers=3)
    model = make_model(cfg, seed=2)
    d = fresh("neox-seq-r100")
    model.save_pretrained(str(d), safe_serialization=True)
    tidy_folder(d)
    saved = json.loads((d / "config.json").read_text())
    assert saved["rope_parameters"]["partial_rotary_factor"] == 1.0, saved
    write_golden(root, "neox-seq-r100", load_back(d), fixed_tokens(40, seed=102),
                 "sequential residual, rotary_pct 1.0, 3 layers; config.json uses transformers 5 "
                 "rope_parameters {rope_theta, partial_rotary_factor} instead of rotary_pct")

    # --- neox-hd40: head_dim 40 (rotary_ndims 10), non-default eps and rotary base; 150 tokens so
    # that tiled kernels cross 64/128-row boundaries.
    cfg = base_config(hidden_size=120, num_attention_heads=3, intermediate_size=480,
                      layer_norm_eps=1e-6, rotary_emb_base=5000)
    model = make_model(cfg, seed=3)
    d = fresh("neox-hd40")
    model.save_pretrained(str(d), safe_serialization=True)
    tidy_folder(d)
    pythia_style_config(d, cfg, "float32")
    loaded = load_back(d)
    assert loaded.gpt_neox.layers[0].attention.rotary_ndims == 10
    assert loaded.config.layer_norm_eps == 1e-6
    write_golden(root, "neox-hd40", loaded, fixed_tokens(150, seed=103),
                 "head_dim 40 (rotary_ndims 10), layer_norm_eps 1e-6, rotary_emb_base 5000")

    # --- neox-peaked: the eviction-policy fixture model (tools/reference/policy_reference.py).
    # Random weights give near-uniform attention, where H2O's top-k is decided by rounding noise;
    # scaling the Q and K projections makes attention peaked so score gaps are robust.
    cfg = base_config(max_position_embeddings=2048)
    model = make_model(cfg, seed=4, qk_scale=PEAKED_QK_SCALE)
    d = fresh("neox-peaked")
    model.save_pretrained(str(d), safe_serialization=True)
    tidy_folder(d)
    pythia_style_config(d, cfg, "float32")
    write_golden(root, "neox-peaked", load_back(d), fixed_tokens(64, seed=104),
                 f"policy fixture model: Q/K projections scaled by {PEAKED_QK_SCALE}")


if __name__ == "__main__":
    main()
