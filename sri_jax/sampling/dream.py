"""Dream-style masked-diffusion sampling (one block) as one ``lax.scan``.

Dream's sampler reads the prediction for position i from position i - 1 (shifted logits),
walks timesteps linspace(1, eps, steps + 1), and at step i commits
floor(masks * (1 - s / t)) tokens per row (all remaining ones at the last step), chosen by:

- ``maskgit_plus``: confidence = probability of the sampled token;
- ``topk_margin``:  top-1 minus top-2 probability;
- ``entropy``:      negative entropy of the position's distribution;
- ``origin``:       every masked position is revealed independently with prob 1 - s / t.

``dream_alg_temp > 0`` picks positions at random in proportion to softmax(conf / alg_temp)
without replacement (Gumbel-top-k: the same race as torch's ``multinomial`` without
replacement, ``topk(p / E)`` with E ~ Exp(1), so given the same uniforms u, E = -log u, the
same positions). Temperature > 0 samples tokens the same way (``argmax(p / E)``), after
top-p then top-k filtering of logits / T, as upstream's ``sample_tokens``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..models.config import ModelConfig
from ..models.decoder import forward, lm_head
from .common import (Probe, StepRecord, draw_noise, filter_logits, gumbel, project,
                     sri_update)
from .config import SamplerConfig
from .diffusion import diffusion_sample, pool_response


def dream_timesteps(scfg: SamplerConfig):
    return jnp.linspace(1.0, scfg.dream_eps, scfg.steps + 1, dtype=jnp.float32)


def sample_tokens(logits, u, scfg: SamplerConfig):
    """Dream's sample_tokens: (confidence, x0) per position [B, G], probabilities in fp32;
    ``u`` [B, G, V] uniforms for the draw at temperature > 0."""
    if scfg.temperature > 0:
        logits = logits / scfg.temperature
    logits = filter_logits(filter_logits(logits, None, scfg.top_p), scfg.top_k, None)
    probs = jax.nn.softmax(logits, axis=-1)
    if scfg.temperature > 0:
        x0 = jnp.argmax(logits + gumbel(u), axis=-1)  # categorical: argmax(p / (-log u))
        conf = jnp.take_along_axis(probs, x0[..., None], axis=-1)[..., 0]
    else:
        x0 = jnp.argmax(probs, axis=-1)
        conf = jnp.max(probs, axis=-1)
    if scfg.dream_alg == "topk_margin":
        top2 = jax.lax.top_k(probs, 2)[0]
        conf = top2[..., 0] - top2[..., 1]
    elif scfg.dream_alg == "entropy":
        conf = jnp.sum(probs * jnp.log(probs + 1e-10), axis=-1)
    return conf, x0.astype(jnp.int32)


def dream_step(params, mcfg: ModelConfig, scfg: SamplerConfig, prompt_len: int,
               attention_mask, positions, probe: Probe, hidden_layer, state, i,
               record_snapshots: bool = False, noise=None):
    b = state.canvas.shape[0]
    g = scfg.gen_length
    mask_id = mcfg.mask_token_id
    x = state.canvas
    out = forward(params, mcfg, x, attention_mask=attention_mask, positions=positions,
                  hidden_layer=hidden_layer, compute_logits=False)
    # shifted logits: response position P + j is predicted from hidden state P + j - 1
    logits = lm_head(params, mcfg, jax.lax.dynamic_slice_in_dim(out.hidden, prompt_len - 1, g, 1))
    ts = dream_timesteps(scfg)
    t, s = ts[i], ts[i + 1]
    last = i == scfg.steps - 1
    key, k_tok, k_pos = jax.random.split(state.key, 3)
    if noise is None:
        noise = draw_noise(k_tok, k_pos, logits.shape, scfg.temperature > 0,
                           scfg.dream_alg == "origin" or scfg.dream_alg_temp > 0)
    x_gen = x[:, prompt_len:]
    masked = x_gen == mask_id
    conf, x0 = sample_tokens(logits, noise.tok, scfg)
    if scfg.dream_alg == "origin":
        p_transfer = jnp.where(last, 1.0, 1.0 - s / t)
        transfer = masked & (noise.pos < p_transfer)
    else:
        num_mask = jnp.sum(masked).astype(jnp.float32) / b
        k_t = jnp.where(last, num_mask, num_mask * (1.0 - s / t)).astype(jnp.int32)
        conf = jnp.where(masked, conf, -jnp.inf)
        if scfg.dream_alg_temp > 0:
            logp = jax.nn.log_softmax(conf / scfg.dream_alg_temp, axis=-1)
            conf = jnp.where(masked, logp + gumbel(noise.pos), -jnp.inf)
        _, order = jax.lax.top_k(conf, g)  # full ranking, ties -> lower index first
        rank = jnp.zeros((b, g), jnp.int32).at[jnp.arange(b)[:, None], order].set(
            jnp.broadcast_to(jnp.arange(g, dtype=jnp.int32), (b, g)))
        transfer = masked & (rank < k_t)
    x = x.at[:, prompt_len:].set(jnp.where(transfer, x0, x_gen))

    phi = pool_response(out, hidden_layer, x, prompt_len, mask_id, scfg.pooling,
                        fixed=state.fixed)
    sri = sri_update(state.sri, probe, phi, i, scfg.tau)
    rec = StepRecord(phi, project(probe, phi), x[:, prompt_len:] if record_snapshots else None)
    return state._replace(canvas=x, key=key, sri=sri), rec


def dream_sample(params, mcfg: ModelConfig, scfg: SamplerConfig, input_ids, attention_mask,
                 key, probe: Probe, **kwargs):
    """The fused Dream sampler: :func:`diffusion_sample`'s scan with Dream's step."""
    return diffusion_sample(params, mcfg, scfg, input_ids, attention_mask, key, probe,
                            step_fn=dream_step, **kwargs)
