"""Sampler configuration: frozen and hashable, so it is a static argument of the fused samplers."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Union

MODES = ("diffusion", "autoregressive", "ar_on_diffusion")
REMASKING = ("low_confidence", "random")
DREAM_ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")
POOLING = ("all", "committed")
CFG_POOL = ("cond", "uncond")
CACHES = ("none", "prefix", "dual")


# What each sampler ignores (sri_jax.sampling): the AR sampler decodes one token per step;
# LLaDA's diffusion step draws from all logits; Dream picks positions with dream_alg and has
# no guidance; ar_on_diffusion commits one token per step, left to right.
_AR_IGNORES = ("steps", "block_length", "remasking", "cfg_scale", "cfg_pool", "pooling")
_WHY = {
    "ar": "an autoregressive model (one token per step, T = gen_length; no blocks, "
          "remasking, guidance or pooling choice)",
    "ar_mode": "a diffusion model (use mode diffusion or ar_on_diffusion)",
    "top": "a diffusion model whose sampler draws from the full distribution (no top-p/top-k)",
    "dream": "a Dream model (dream_alg picks the positions; no remasking or guidance)",
    "ar_on_diffusion": "ar_on_diffusion commits one token per step (no block length or "
                       "remasking)",
}


def inapplicable_sampler_options(model, options) -> tuple[list[str], str]:
    """The given (not None) sampler options that ``model``'s sampler would ignore, and why:
    ``(names, reason)``; ``([], "")`` when every option applies."""
    given = [k for k, v in options.items() if v is not None]
    mode = options.get("mode")
    if model.config.causal:
        bad = [k for k in given if k in _AR_IGNORES or (k == "mode" and mode != "autoregressive")]
        return bad, _WHY["ar"] if bad else ""
    if mode == "autoregressive":
        return ["mode"], _WHY["ar_mode"]
    rules = [(("remasking", "cfg_scale", "cfg_pool"), "dream") if model.config.logits_shift
             else (("top_p", "top_k"), "top")]
    if mode == "ar_on_diffusion":
        rules.append((("block_length", "remasking"), "ar_on_diffusion"))
    bad, why = [], []
    for keys, reason in rules:
        hit = [k for k in given if k in keys and k not in bad]
        if hit:
            bad += hit
            why.append(_WHY[reason])
    return bad, "; ".join(why)


@dataclass(frozen=True)
class SamplerConfig:
    """How to sample, and how to read the SRI signal while sampling.

    Diffusion (LLaDA): ``steps`` forward passes over a canvas of ``gen_length`` masks,
    split into ``gen_length // block_length`` blocks decoded left to right with
    ``steps // num_blocks`` iterations each. Dream models use ``dream_alg`` (one block).
    Autoregressive: ``gen_length`` tokens, one per step (``steps`` must equal ``gen_length``).
    ``ar_on_diffusion``: a diffusion model decoded left to right, one token committed per
    step (block_length 1, no remasking): the fixed-weights experiment.

    SRI: ``layer`` is "last" (final-norm output), "middle", "first" or a block index;
    ``pooling`` "all" averages every response position (the reference), "committed" only
    positions already committed (diffusion). ``tau`` is the sigmoid temperature.
    ``cfg_pool`` (with ``cfg_scale > 0``): pool the conditional pass ("cond", default) or
    the pass with the prompt masked ("uncond", what the reference's hook reads: the last row
    of its doubled batch); docs/sampling.md says why.

    Fast diffusion decoding (``mode="diffusion"``, no CFG; LLaDA, and Dream with blocks;
    sampling/fast_diffusion.py, docs/sampling.md): ``cache`` "prefix" reuses the keys/values
    before the current block, "dual" also those after it, both computed at each block's
    first step (Fast-dLLM);
    ``threshold`` commits every masked position of the block whose confidence exceeds it
    (at least one per step) until the block is done; ``steps`` is then the number of SRI
    points, read at committed fractions 1/T, 2/T, ..., 1 of the response.
    """

    steps: int = 32
    gen_length: int = 128
    block_length: int = 128
    temperature: float = 0.0
    remasking: str = "low_confidence"
    cfg_scale: float = 0.0
    logits_eos_inf: bool = False
    confidence_eos_eot_inf: bool = False
    mode: str = "diffusion"
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    dream_alg: str = "maskgit_plus"
    dream_eps: float = 1e-3
    dream_alg_temp: float = 0.0
    layer: Union[str, int] = "last"
    pooling: str = "all"
    tau: float = 0.1
    cfg_pool: str = "cond"
    cache: str = "none"
    threshold: Optional[float] = None

    def __post_init__(self):
        errs = []
        if self.mode not in MODES:
            errs.append(f"mode {self.mode!r} must be one of {MODES}")
        if self.remasking not in REMASKING:
            errs.append(f"remasking {self.remasking!r} must be one of {REMASKING}")
        if self.dream_alg not in DREAM_ALGS:
            errs.append(f"dream_alg {self.dream_alg!r} must be one of {DREAM_ALGS}")
        if self.pooling not in POOLING:
            errs.append(f"pooling {self.pooling!r} must be one of {POOLING}")
        if self.cfg_pool not in CFG_POOL:
            errs.append(f"cfg_pool {self.cfg_pool!r} must be one of {CFG_POOL}")
        if self.cache not in CACHES:
            errs.append(f"cache {self.cache!r} must be one of {CACHES}")
        if self.threshold is not None and not (0 < self.threshold <= 1):
            errs.append(f"threshold must be in (0, 1] or None, got {self.threshold}")
        if self.fast and (self.mode != "diffusion" or self.cfg_scale > 0):
            errs.append("cache/threshold decoding needs mode='diffusion' and cfg_scale 0, got "
                        f"mode {self.mode!r}, cfg_scale {self.cfg_scale}; use cache='none', "
                        "threshold=None for the others")
        if self.gen_length <= 0 or self.steps <= 0:
            errs.append(f"gen_length ({self.gen_length}) and steps ({self.steps}) must be > 0")
        # written as "not (ok)" so that NaN, which fails every comparison, is refused too
        for name in ("temperature", "dream_alg_temp", "cfg_scale"):
            v = getattr(self, name)
            if not (0 <= v < math.inf):
                errs.append(f"{name} must be a finite number >= 0, got {v}")
        if not (0 < self.tau < math.inf):
            errs.append(f"tau must be a finite number > 0, got {self.tau}")
        if not (0 <= self.dream_eps < 1):
            errs.append(f"dream_eps must be in [0, 1), got {self.dream_eps}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            errs.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            errs.append(f"top_k must be >= 1, got {self.top_k}")
        if self.mode == "diffusion" and self.gen_length > 0 and self.steps > 0:
            if self.block_length <= 0 or self.gen_length % self.block_length:
                errs.append(f"gen_length {self.gen_length} is not divisible by block_length "
                            f"{self.block_length}; pick block_length dividing gen_length")
            elif self.steps % (self.gen_length // self.block_length):
                errs.append(f"steps {self.steps} is not divisible by the number of blocks "
                            f"{self.gen_length // self.block_length}; use a multiple of it")
        if self.mode in ("autoregressive", "ar_on_diffusion") and self.steps != self.gen_length:
            errs.append(f"{self.mode} sampling takes one step per token: steps "
                        f"({self.steps}) must equal gen_length ({self.gen_length})")
        if errs:
            raise ValueError("invalid SamplerConfig: " + "; ".join(errs))

    @property
    def fast(self) -> bool:
        """Cached or threshold decoding (sampling/fast_diffusion.py) instead of the exact one."""
        return self.cache != "none" or self.threshold is not None

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.effective_block_length

    @property
    def effective_block_length(self) -> int:
        return 1 if self.mode == "ar_on_diffusion" else self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks

    def replace(self, **changes) -> "SamplerConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def autoregressive(cls, gen_length: int = 32, **kw) -> "SamplerConfig":
        return cls(mode="autoregressive", gen_length=gen_length, steps=gen_length,
                   block_length=gen_length, **kw)

    @classmethod
    def for_model(cls, model, **overrides) -> "SamplerConfig":
        """The paper's defaults for ``model``'s sampler: 32 greedy tokens for AR models; gen
        128, 32 steps, one block, greedy, low-confidence remasking for diffusion models
        (``ar_on_diffusion``: one step per token); ``overrides`` (None ones skipped) on top.
        An option the model's sampler would ignore is a ValueError."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        bad, why = inapplicable_sampler_options(model, overrides)
        if bad:
            raise ValueError(f"{', '.join(bad)}: not used for {model.name or 'this model'}, "
                             f"{why}; leave them out")
        if model.config.causal:
            overrides.pop("mode", None)
            return cls.autoregressive(gen_length=overrides.pop("gen_length", 32), **overrides)
        base = dict(steps=32, gen_length=128, block_length=128)
        base.update(overrides)
        if "block_length" not in overrides:
            base["block_length"] = base["gen_length"]
        if base.get("mode") == "ar_on_diffusion" and "steps" not in overrides:
            base["steps"] = base["gen_length"]
        return cls(**base)
