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
from .diffusion import StepContext, diffusion_sample, pool_response


def step_fraction(scfg: SamplerConfig, steps: int, i):
    """(1 - s / t, last) at step i of ``steps`` on Dream's timesteps linspace(1, eps,
    steps + 1): the share of the masked positions step i commits, and whether i is the last
    step (which commits all of them)."""
    ts = jnp.linspace(1.0, scfg.dream_eps, steps + 1, dtype=jnp.float32)
    return 1.0 - ts[i + 1] / ts[i], i == steps - 1


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


def ranked_transfer(scfg: SamplerConfig, conf, masked, frac, last, num_mask, u_pos):
    """[B, L] bool: Dream's commits at one step, the k best-ranked masked positions with
    k = floor(num_mask * frac) (num_mask at the ``last`` step; ``num_mask`` a scalar, the
    batch mean as upstream, or [B] per row). Ranked by ``conf`` or, with
    ``dream_alg_temp > 0``, drawn without replacement from softmax(conf / alg_temp)
    (Gumbel-top-k with the uniforms ``u_pos`` [B, L]); ties toward the lower index."""
    b, n = conf.shape
    k_t = jnp.where(last, num_mask, num_mask * frac).astype(jnp.int32)
    conf = jnp.where(masked, conf, -jnp.inf)
    if scfg.dream_alg_temp > 0:
        logp = jax.nn.log_softmax(conf / scfg.dream_alg_temp, axis=-1)
        conf = jnp.where(masked, logp + gumbel(u_pos), -jnp.inf)
    _, order = jax.lax.top_k(conf, n)  # full ranking, ties -> lower index first
    rank = jnp.zeros((b, n), jnp.int32).at[jnp.arange(b)[:, None], order].set(
        jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n)))
    return masked & (rank < jnp.reshape(k_t, (-1, 1)))


def dream_noise(key, shape, scfg: SamplerConfig):
    """This step's uniforms: ``tok`` for the token draw (temperature > 0), ``pos`` for
    ``origin``'s reveals and ``dream_alg_temp``'s position draw."""
    _, k_tok, k_pos = jax.random.split(key, 3)
    return draw_noise(k_tok, k_pos, shape, scfg.temperature > 0,
                      scfg.dream_alg == "origin" or scfg.dream_alg_temp > 0)


def dream_step(ctx: StepContext, state, i, noise=None):
    """One step of Dream's sampler over the whole response (the step function protocol of
    :func:`~.diffusion.diffusion_sample`)."""
    params, mcfg, scfg, prompt_len, attention_mask, positions, probe, hidden_layer, \
        record_snapshots = ctx
    b = state.canvas.shape[0]
    g = scfg.gen_length
    mask_id = mcfg.mask_token_id
    x = state.canvas
    out = forward(params, mcfg, x, attention_mask=attention_mask, positions=positions,
                  hidden_layer=hidden_layer, compute_logits=False)
    # shifted logits: response position P + j is predicted from hidden state P + j - 1
    logits = lm_head(params, mcfg, jax.lax.dynamic_slice_in_dim(out.hidden, prompt_len - 1, g, 1))
    frac, last = step_fraction(scfg, scfg.steps, i)
    key = jax.random.split(state.key, 3)[0]
    if noise is None:
        noise = dream_noise(state.key, logits.shape, scfg)
    x_gen = x[:, prompt_len:]
    masked = x_gen == mask_id
    conf, x0 = sample_tokens(logits, noise.tok, scfg)
    if scfg.dream_alg == "origin":
        transfer = masked & (noise.pos < jnp.where(last, 1.0, frac))
    else:
        num_mask = jnp.sum(masked).astype(jnp.float32) / b
        transfer = ranked_transfer(scfg, conf, masked, frac, last, num_mask, noise.pos)
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
