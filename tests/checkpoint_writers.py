"""Write tiny random checkpoints in each family's exact on-disk format, plus their HF oracles.

    ck = write_llama_dir(tmp_path / "llama", hidden=64, layers=2, tie=True)
    ck.hf_config          # config.json as written
    ck.oracle()           # HF transformers PyTorch model (fp32, eval) with the same weights

* Llama / Qwen2: a tiny random ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` saved with
  ``save_pretrained`` (transformers 5 writes safetensors; ``max_shard_size`` small -> an index
  and several shards). The oracle is the same HF class rebuilt from the in-memory weights
  that ``save_pretrained`` wrote (so the files are only ever read by the code under test).
* LLaDA: the REAL LLaDA-8B-Instruct ``config.json`` / ``generation_config.json`` /
  ``tokenizer_config.json`` (from ``tests/data/llada-8b-instruct``, the real release's files) with the sizes
  scaled down, tensors under LLaDA's real names (``model.transformer.blocks.N.ff_proj.weight``
  ...; torch ``[out, in]``), stored in BF16 like the release, split into
  ``model-0000k-of-0000n.safetensors`` shards with the release's index layout
  (``{"metadata": {"total_size": ...}, "weight_map": {...}}``), written by the official
  ``safetensors`` library. Special ids: the release's 269 added tokens occupy ids
  126080..126348; scaled down they are moved to the top of the small vocabulary,
  ``small_id = real_id - 126080 + (vocab - 269)`` (so mask 126336 -> vocab - 13, BOS 126080 ->
  vocab - 269, EOS/pad 126081 -> vocab - 268, eot 126348 -> vocab - 1), consistently in
  config.json, generation_config.json and tokenizer_config.json's ``added_tokens_decoder``.
  No tokenizer.json is written (no LLaDA tokenizer exists offline), so loading yields no
  tokenizer but the chat template of tokenizer_config.json. The oracle is HF
  ``LlamaForCausalLM`` with the same sizes, the weights renamed, and ``config.is_causal=False``
  (fully bidirectional attention in transformers >= 5.2).
* Dream: Qwen2 tensor names (saved by a tiny ``Qwen2ForCausalLM``) and a Dream-style
  config.json in the release's (transformers 4.46) key style: ``model_type`` "Dream",
  ``architectures`` ["DreamModel"], ``mask_token_id``, ``rope_theta`` top level. Oracle:
  ``Qwen2ForCausalLM`` with ``is_causal=False``.

All random weights use ``init_std`` (default 0.15, larger than HF's 0.02 so attention is far
from uniform and mapping bugs show), norms ``1 + 0.1 * N(0, 1)`` and biases ``0.1 * N(0, 1)``.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

# The real LLaDA-8B-Instruct release's metadata files (no weights), kept as test data.
LLADA_FORMAT_DIR = Path(__file__).parent / "data" / "llada-8b-instruct"
LLADA_FIRST_ADDED_ID = 126080
LLADA_N_ADDED = 269  # ids 126080..126348 in the release


@dataclass
class WrittenCheckpoint:
    """What a writer produced: the directory, config.json as written, the torch weights the
    oracle uses (HF Llama/Qwen2 names, fp32) and how to build the oracle."""

    path: Path
    hf_config: dict
    state_dict: dict
    oracle_arch: str                 # "llama" | "qwen2" | "gemma2" | "gemma3"
    oracle_config: dict              # kwargs of LlamaConfig / Qwen2Config
    causal: bool = True
    extra: dict = field(default_factory=dict)

    def oracle(self, attn_implementation: str = "eager"):
        """The HF transformers PyTorch model with the same weights (fp32, eval mode)."""
        from transformers import (Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM,
                                  Gemma3TextConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                                  Qwen2ForCausalLM)
        cfg_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM),
                              "qwen2": (Qwen2Config, Qwen2ForCausalLM),
                              "gemma2": (Gemma2Config, Gemma2ForCausalLM),
                              "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM)}[self.oracle_arch]
        cfg = cfg_cls(**self.oracle_config)
        cfg._attn_implementation = attn_implementation
        if not self.causal:
            cfg.is_causal = False
        model = model_cls(cfg).to(torch.float32)
        missing, unexpected = model.load_state_dict(
            {k: v.to(torch.float32) for k, v in self.state_dict.items()}, strict=False)
        allowed_missing = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
        if set(missing) - allowed_missing or unexpected:
            raise RuntimeError(f"oracle weights do not fit: missing {missing}, "
                               f"unexpected {unexpected}")
        if cfg.tie_word_embeddings:
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        return model.eval()


# ----------------------------------------------------------------------------- helpers


def _randomize_(model: torch.nn.Module, seed: int, init_std: float, norm_center: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(norm_center + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(init_std * torch.randn(p.shape, generator=g))


def _hf_kwargs(hidden, intermediate, layers, heads, kv_heads, vocab, head_dim, tie, rope_theta,
               max_position_embeddings, rms_norm_eps):
    kw = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
              num_hidden_layers=layers, num_attention_heads=heads,
              num_key_value_heads=kv_heads, rms_norm_eps=rms_norm_eps, rope_theta=rope_theta,
              max_position_embeddings=max_position_embeddings, tie_word_embeddings=tie,
              bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if head_dim is not None:
        kw["head_dim"] = head_dim
    return kw


def _save_hf(model, path: Path, max_shard_size) -> dict:
    path.mkdir(parents=True, exist_ok=True)
    kw = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(str(path), **kw)
    return json.loads((path / "config.json").read_text())


def write_tiny_tokenizer(path, vocab: int, *, chat_template: Optional[str] = None,
                         eos: str = "<eos>", bos: str = "<bos>", pad: str = "<pad>"):
    """A word-level tokenizer.json (+ tokenizer_config.json) over ``vocab`` ids: specials
    <pad>=0, <bos>=1, <eos>=2, then "w3", "w4", ... Loads with AutoTokenizer, no remote code."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    words = {pad: 0, bos: 1, eos: 2, "<unk>": 3}
    words.update({f"w{i}": i for i in range(4, vocab)})
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos,
                                   pad_token=pad, unk_token="<unk>")
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.save_pretrained(str(path))
    return fast


# ----------------------------------------------------------------------------- Llama / Qwen2


def write_llama_dir(path, *, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2,
                    vocab=256, head_dim=None, tie=False, rope_theta=10000.0,
                    rope_scaling: Optional[dict] = None, max_position_embeddings=128,
                    rms_norm_eps=1e-5, max_shard_size=None, seed=0, init_std=0.15,
                    tokenizer_chat_template: Optional[str] = None) -> WrittenCheckpoint:
    """Tiny random ``LlamaForCausalLM`` saved by ``save_pretrained`` (safetensors).

    rope_scaling: e.g. ``{"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
    "high_freq_factor": 4.0, "original_max_position_embeddings": 32}``.
    max_shard_size: e.g. "20KB" for an index with several shards.
    tokenizer_chat_template: also write a tiny word-level tokenizer with this template.
    """
    from transformers import LlamaConfig, LlamaForCausalLM
    path = Path(path)
    kw = _hf_kwargs(hidden, intermediate, layers, heads, kv_heads, vocab, head_dim, tie,
                    rope_theta, max_position_embeddings, rms_norm_eps)
    if rope_scaling is not None:
        kw["rope_scaling"] = dict(rope_scaling)
    model = LlamaForCausalLM(LlamaConfig(**kw))
    _randomize_(model, seed, init_std)
    hf_config = _save_hf(model, path, max_shard_size)
    if tokenizer_chat_template is not None:
        write_tiny_tokenizer(path, vocab, chat_template=tokenizer_chat_template)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if tie:
        sd.pop("lm_head.weight", None)
    return WrittenCheckpoint(path, hf_config, sd, "llama", kw, causal=True)


def write_qwen2_dir(path, *, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2,
                    vocab=256, tie=False, rope_theta=1000000.0, max_position_embeddings=128,
                    rms_norm_eps=1e-6, max_shard_size=None, seed=0,
                    init_std=0.15) -> WrittenCheckpoint:
    """Tiny random ``Qwen2ForCausalLM`` (q/k/v biases) saved by ``save_pretrained``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    path = Path(path)
    kw = _hf_kwargs(hidden, intermediate, layers, heads, kv_heads, vocab, None, tie,
                    rope_theta, max_position_embeddings, rms_norm_eps)
    model = Qwen2ForCausalLM(Qwen2Config(**kw))
    _randomize_(model, seed, init_std)
    hf_config = _save_hf(model, path, max_shard_size)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if tie:
        sd.pop("lm_head.weight", None)
    return WrittenCheckpoint(path, hf_config, sd, "qwen2", kw, causal=True)


# ----------------------------------------------------------------------------- Gemma


def write_gemma_dir(path, arch: str = "gemma2", *, hidden=64, intermediate=128, layers=4,
                    heads=4, kv_heads=2, head_dim=24, vocab=256, sliding_window=4,
                    query_pre_attn_scalar=24, attn_logit_softcapping=None,
                    final_logit_softcapping=None, rope_parameters: Optional[dict] = None,
                    max_position_embeddings=128, rms_norm_eps=1e-6, tie=True,
                    max_shard_size=None, seed=0, init_std=0.15) -> WrittenCheckpoint:
    """Tiny random ``Gemma2ForCausalLM`` (arch "gemma2") or ``Gemma3ForCausalLM`` (arch
    "gemma3", model_type gemma3_text) saved by ``save_pretrained`` (transformers 5 config keys:
    ``layer_types``, ``rope_parameters``). Norm weights are stored as w ~ 0.1 N(0, 1) (Gemma
    applies 1 + w). head_dim 24 != hidden / heads and query_pre_attn_scalar 24 != head_dim,
    as in the releases (the scalar is what scales the scores). Soft-caps default to the
    family's (Gemma-2: 50 / 30; Gemma-3: none)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig
    path = Path(path)
    kw = _hf_kwargs(hidden, intermediate, layers, heads, kv_heads, vocab, head_dim, tie,
                    10000.0, max_position_embeddings, rms_norm_eps)
    kw.pop("rope_theta")
    kw.update(sliding_window=sliding_window, query_pre_attn_scalar=query_pre_attn_scalar,
              bos_token_id=2, eos_token_id=1, pad_token_id=0)
    if arch == "gemma2":
        kw.update(attn_logit_softcapping=50.0 if attn_logit_softcapping is None
                  else attn_logit_softcapping,
                  final_logit_softcapping=30.0 if final_logit_softcapping is None
                  else final_logit_softcapping)
        cfg_cls, model_cls = Gemma2Config, Gemma2ForCausalLM
    else:
        kw.update(attn_logit_softcapping=attn_logit_softcapping,
                  final_logit_softcapping=final_logit_softcapping)
        cfg_cls, model_cls = Gemma3TextConfig, Gemma3ForCausalLM
    if rope_parameters is not None:
        kw["rope_parameters"] = copy.deepcopy(rope_parameters)
    model = model_cls(cfg_cls(**kw))
    _randomize_(model, seed, init_std, norm_center=0.0)
    hf_config = _save_hf(model, path, max_shard_size)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if tie:
        sd.pop("lm_head.weight", None)
    return WrittenCheckpoint(path, hf_config, sd, arch, kw, causal=True)


# ----------------------------------------------------------------------------- Dream


def write_dream_dir(path, *, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2,
                    vocab=256, rope_theta=1000000.0, max_position_embeddings=128,
                    rms_norm_eps=1e-6, max_shard_size=None, seed=0,
                    init_std=0.15) -> WrittenCheckpoint:
    """Dream-format directory: Qwen2 tensor names, Dream config.json (mask_token_id =
    vocab - 2, eos/pad = vocab - 3; the release uses 151666 and 151643)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    path = Path(path)
    mask_id, eos_id = vocab - 2, vocab - 3
    kw = _hf_kwargs(hidden, intermediate, layers, heads, kv_heads, vocab, None, False,
                    rope_theta, max_position_embeddings, rms_norm_eps)
    kw.update(bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    model = Qwen2ForCausalLM(Qwen2Config(**kw))
    _randomize_(model, seed, init_std)
    _save_hf(model, path, max_shard_size)
    hf_config = {
        "architectures": ["DreamModel"],
        "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig",
                     "AutoModel": "modeling_dream.DreamModel"},
        "bos_token_id": eos_id, "eos_token_id": eos_id, "pad_token_id": eos_id,
        "hidden_act": "silu", "hidden_size": hidden, "initializer_range": 0.02,
        "intermediate_size": intermediate, "mask_token_id": mask_id,
        "max_position_embeddings": max_position_embeddings, "max_window_layers": layers,
        "model_type": "Dream", "num_attention_heads": heads, "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads, "rms_norm_eps": rms_norm_eps, "rope_scaling": None,
        "rope_theta": rope_theta, "sliding_window": None, "tie_word_embeddings": False,
        "torch_dtype": "float32", "transformers_version": "4.46.2", "use_cache": True,
        "use_sliding_window": False, "vocab_size": vocab,
    }
    (path / "config.json").write_text(json.dumps(hf_config, indent=2))
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return WrittenCheckpoint(path, hf_config, sd, "qwen2", kw, causal=False,
                             extra={"mask_token_id": mask_id, "eos_token_id": eos_id})


# ----------------------------------------------------------------------------- LLaDA

# LLaDA name (block suffix) -> HF Llama name, for the oracle.
LLADA_TO_HF_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "q_proj.weight": "self_attn.q_proj.weight",
    "k_proj.weight": "self_attn.k_proj.weight",
    "v_proj.weight": "self_attn.v_proj.weight",
    "attn_out.weight": "self_attn.o_proj.weight",
    "ff_norm.weight": "post_attention_layernorm.weight",
    "ff_proj.weight": "mlp.gate_proj.weight",
    "up_proj.weight": "mlp.up_proj.weight",
    "ff_out.weight": "mlp.down_proj.weight",
}
LLADA_TO_HF_TOP = {
    "model.transformer.wte.weight": "model.embed_tokens.weight",
    "model.transformer.ln_f.weight": "model.norm.weight",
    "model.transformer.ff_out.weight": "lm_head.weight",
}


def llada_to_hf_name(name: str) -> str:
    if name in LLADA_TO_HF_TOP:
        return LLADA_TO_HF_TOP[name]
    prefix = "model.transformer.blocks."
    assert name.startswith(prefix), name
    layer, suffix = name[len(prefix):].split(".", 1)
    return f"model.layers.{layer}.{LLADA_TO_HF_BLOCK[suffix]}"


def llada_small_id(real_id: int, vocab: int) -> int:
    """Where a release special id lands in a scaled-down vocabulary (see module doc)."""
    return real_id - LLADA_FIRST_ADDED_ID + vocab - LLADA_N_ADDED


def llada_tensors(*, d_model, n_layers, n_heads, n_kv_heads, mlp, vocab, weight_tying=False,
                  seed=0, init_std=0.15) -> dict:
    """Random fp32 torch tensors under LLaDA's real names, [out, in] layout."""
    g = torch.Generator().manual_seed(seed)
    hd = d_model // n_heads

    def w(*shape):
        return init_std * torch.randn(shape, generator=g)

    def norm(n):
        return 1 + 0.1 * torch.randn((n,), generator=g)

    t = {"model.transformer.wte.weight": w(vocab, d_model),
         "model.transformer.ln_f.weight": norm(d_model)}
    if not weight_tying:
        t["model.transformer.ff_out.weight"] = w(vocab, d_model)
    for i in range(n_layers):
        p = f"model.transformer.blocks.{i}."
        t[p + "attn_norm.weight"] = norm(d_model)
        t[p + "q_proj.weight"] = w(n_heads * hd, d_model)
        t[p + "k_proj.weight"] = w(n_kv_heads * hd, d_model)
        t[p + "v_proj.weight"] = w(n_kv_heads * hd, d_model)
        t[p + "attn_out.weight"] = w(d_model, n_heads * hd)
        t[p + "ff_norm.weight"] = norm(d_model)
        t[p + "ff_proj.weight"] = w(mlp, d_model)
        t[p + "up_proj.weight"] = w(mlp, d_model)
        t[p + "ff_out.weight"] = w(d_model, mlp)
    return t


def write_sharded(path, tensors: dict, n_shards: int, *, prefix="model") -> dict:
    """Write torch tensors as ``{prefix}-0000k-of-0000n.safetensors`` + the HF index JSON
    (``metadata.total_size`` = bytes of all tensors, ``weight_map`` sorted by name) with the
    official safetensors writer. Layers are kept together: names are grouped in the order of
    their first appearance in ``tensors`` and cut into contiguous, roughly equal shards."""
    from safetensors.torch import save_file
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    n_shards = max(1, min(n_shards, len(names)))
    per = math.ceil(len(names) / n_shards)
    weight_map, total = {}, 0
    for s in range(n_shards):
        chunk = names[s * per:(s + 1) * per]
        if not chunk:
            continue
        fname = f"{prefix}-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        save_file({k: tensors[k].contiguous() for k in chunk}, str(path / fname),
                  metadata={"format": "pt"})
        for k in chunk:
            weight_map[k] = fname
            total += tensors[k].numel() * tensors[k].element_size()
    index = {"metadata": {"total_size": total},
             "weight_map": dict(sorted(weight_map.items()))}
    (path / f"{prefix}.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return index


def write_llada_dir(path, *, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp=128,
                    vocab=512, n_shards=3, weight_tying=False, dtype=torch.bfloat16, seed=0,
                    init_std=0.15, with_tokenizer_config=True) -> WrittenCheckpoint:
    """Scaled-down LLaDA-8B-Instruct directory in the release's exact format.

    vocab must be > 269 (the release's added tokens are remapped to the top ids). Tensors are
    stored in ``dtype`` (BF16 like the release); the oracle gets the stored values in fp32.
    """
    if vocab <= LLADA_N_ADDED + 2:
        raise ValueError(f"vocab must exceed {LLADA_N_ADDED + 2} to hold LLaDA's special ids")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    real = json.loads((LLADA_FORMAT_DIR / "config.json").read_text())
    hf_config = copy.deepcopy(real)
    sid = lambda i: llada_small_id(i, vocab)  # noqa: E731
    hf_config.update(d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                     n_kv_heads=n_kv_heads, mlp_hidden_size=mlp, vocab_size=vocab,
                     embedding_size=vocab, mask_token_id=sid(real["mask_token_id"]),
                     eos_token_id=sid(real["eos_token_id"]),
                     pad_token_id=sid(real["pad_token_id"]), weight_tying=weight_tying,
                     max_sequence_length=256)
    if dtype == torch.float32:
        hf_config["torch_dtype"] = "float32"
    (path / "config.json").write_text(json.dumps(hf_config, indent=2))
    gen = json.loads((LLADA_FORMAT_DIR / "generation_config.json").read_text())
    gen["bos_token_id"] = sid(gen["bos_token_id"])
    gen["eos_token_id"] = sid(gen["eos_token_id"])
    (path / "generation_config.json").write_text(json.dumps(gen, indent=2))
    if with_tokenizer_config:
        tok = json.loads((LLADA_FORMAT_DIR / "tokenizer_config.json").read_text())
        tok["added_tokens_decoder"] = {str(sid(int(k))): v
                                       for k, v in tok["added_tokens_decoder"].items()}
        (path / "tokenizer_config.json").write_text(json.dumps(tok, indent=2))
        (path / "special_tokens_map.json").write_text(
            (LLADA_FORMAT_DIR / "special_tokens_map.json").read_text())

    t32 = llada_tensors(d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                        n_kv_heads=n_kv_heads, mlp=mlp, vocab=vocab,
                        weight_tying=weight_tying, seed=seed, init_std=init_std)
    stored = {k: v.to(dtype) for k, v in t32.items()}
    index = write_sharded(path, stored, n_shards)
    sd = {llada_to_hf_name(k): v.to(torch.float32) for k, v in stored.items()}
    oracle_cfg = dict(vocab_size=vocab, hidden_size=d_model, intermediate_size=mlp,
                      num_hidden_layers=n_layers, num_attention_heads=n_heads,
                      num_key_value_heads=n_kv_heads, head_dim=d_model // n_heads,
                      rms_norm_eps=hf_config["rms_norm_eps"], rope_theta=hf_config["rope_theta"],
                      max_position_embeddings=256, tie_word_embeddings=weight_tying,
                      attention_bias=False, mlp_bias=False)
    return WrittenCheckpoint(path, hf_config, sd, "llama", oracle_cfg, causal=False,
                             extra={"index": index, "llada_state": stored,
                                    "mask_token_id": hf_config["mask_token_id"],
                                    "bos_token_id": gen["bos_token_id"],
                                    "eos_token_id": hf_config["eos_token_id"],
                                    "eot_token_id": sid(126348)})
