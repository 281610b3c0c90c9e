"""Sampler policy: the default sampler per model kind and the options a model's sampler
ignores; the CLI's "auto" dtype (:func:`sri_jax.weights.loader.resolve_dtype`).

Summaries and figures are :mod:`sri_jax.reporting`, the demo :mod:`sri_jax.commands.demo`."""

from __future__ import annotations

from .sampling.config import SamplerConfig
from .weights.loader import resolve_dtype  # noqa: F401 - the CLI's "auto" dtype


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


def default_sampler(model, **overrides) -> SamplerConfig:
    """The paper's defaults: 32 greedy tokens for AR models; gen 128, 32 steps, one block,
    greedy, low-confidence remasking for diffusion models (``ar_on_diffusion``: one step per
    token). An option the model's sampler would ignore is a ValueError."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    bad, why = inapplicable_sampler_options(model, overrides)
    if bad:
        raise ValueError(f"{', '.join(bad)}: not used for {model.name or 'this model'}, {why}; "
                         "leave them out")
    if model.config.causal:
        overrides.pop("mode", None)
        return SamplerConfig.autoregressive(gen_length=overrides.pop("gen_length", 32),
                                            **overrides)
    base = dict(steps=32, gen_length=128, block_length=128)
    base.update(overrides)
    if "block_length" not in overrides:
        base["block_length"] = base["gen_length"]
    if base.get("mode") == "ar_on_diffusion" and "steps" not in overrides:
        base["steps"] = base["gen_length"]
    return SamplerConfig(**base)
