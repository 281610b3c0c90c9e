"""LLaDA-style masked-diffusion sampling as ONE ``lax.scan`` over every step of every block.

The carry holds the canvas, the RNG key and the [B, T] SRI buffer; nothing returns to the
host inside the loop. Per step (t = 0..steps-1, block b = t // steps_per_block):

1. forward the whole canvas (CFG: also with every prompt position replaced by the mask id,
   logits = u + (s + 1)(c - u));
2. logits only for the current block (positions outside it can never be committed);
3. x0 = argmax of Gumbel-perturbed logits; confidence = softmax(logits)[x0] (low_confidence)
   or uniform (random); committed positions get -inf;
4. commit the top-k masked positions of the block, k from LLaDA's transfer schedule of the
   block's mask count M per row (M // steps_per_block, one more for the first
   M % steps_per_block steps; M = block_length unless a response template fixes some);
5. pool the chosen layer's output over the response and write sigma_t.

Confidences are fp32 (upstream computes them in bf16 and ties there are frequent);
``lax.top_k`` breaks ties toward the lower index.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from ..models.config import ModelConfig
from ..models.decoder import default_positions, forward, lm_head
from .common import (Probe, Reads, StepRecord, draw_noise, gumbel_argmax, masked_mean, project,
                     sri_update)
from .config import SamplerConfig

NEG_INF = -jnp.inf


class DiffusionState(NamedTuple):
    canvas: jax.Array  # [B, P + G] int32
    key: jax.Array
    sri: jax.Array     # [B, T] fp32 (zeros when no centers)
    fixed: Optional[jax.Array] = None  # [B, G] bool: response-template tokens (infill), never
    #                                    remasked or pooled; None: every response slot generated


class StepContext(NamedTuple):
    """What every step of one run reads, fixed for the whole scan: the weights, the configs,
    the prompt length, the canvas attention mask and positions [B, P + G], the probe, the
    layer read (None: the last) and whether the step records a snapshot."""

    params: dict
    mcfg: ModelConfig
    scfg: SamplerConfig
    prompt_len: int
    attention_mask: jax.Array
    positions: jax.Array
    probe: Probe
    hidden_layer: Optional[int] = None
    record_snapshots: bool = False


def transfer_schedule(block_length: int, steps_per_block: int):
    """Tokens committed at each step of a block (LLaDA's get_num_transfer_tokens)."""
    base, rem = divmod(block_length, steps_per_block)
    return [base + (1 if j < rem else 0) for j in range(steps_per_block)]


def response_weights(resp, mask_id: int, pooling: str, fixed=None):
    """[B, G] pooling weights over the response tokens ``resp``: every position ("all"), or
    the committed ones ("committed"; all while none is committed). ``fixed`` [B, G]:
    response-template positions (infill), never pooled."""
    gen = jnp.ones(resp.shape, bool) if fixed is None else ~fixed
    if pooling == "committed":
        committed = (resp != mask_id) & gen
        return committed | (gen & ~jnp.any(committed, axis=1, keepdims=True))
    return gen


def pool_response(out, hidden_layer, canvas, prompt_len: int, mask_id: int, pooling: str,
                  uncond: bool = False, fixed=None):
    """phi_t [B, D]: the chosen layer's output averaged over the response
    (:func:`response_weights`, with the canvas after this step's commits).
    ``uncond``: read the rows of the CFG pass with the prompt masked (batch rows B..2B-1)
    instead of the conditional ones. ``fixed`` [B, G]: template positions left out (only
    generated positions are pooled). Always formed; XLA drops it when nothing reads it."""
    b = canvas.shape[0]
    h = (out.hidden if hidden_layer is None else out.layer_hidden)
    h = (h[b:] if uncond else h[:b])[:, prompt_len:]
    return masked_mean(h, response_weights(canvas[:, prompt_len:], mask_id, pooling, fixed))


def block_logits(params, mcfg: ModelConfig, scfg: SamplerConfig, h_blk, b: int):
    """fp32 logits [B, bl, V] of the current block from its final-norm hidden states
    (CFG rows mixed, EOS at -inf when configured)."""
    logits = lm_head(params, mcfg, h_blk)
    if scfg.cfg_scale > 0:
        cond, uncond = logits[:b], logits[b:]
        logits = uncond + (scfg.cfg_scale + 1.0) * (cond - uncond)
    if scfg.logits_eos_inf:
        logits = logits.at[..., mcfg.eos_token_id].set(NEG_INF)
    return logits


def propose(mcfg: ModelConfig, scfg: SamplerConfig, logits, noise):
    """Steps 3 of the sampler: (x0 [B, bl] int32, confidence [B, bl] fp32) per position."""
    x0 = gumbel_argmax(logits, noise.tok, scfg.temperature).astype(jnp.int32)
    if scfg.confidence_eos_eot_inf:
        # Upstream sets EOT to -inf in `logits` before the softmax; at temperature 0 its
        # noisy-logits tensor IS `logits`, so EOS is set to -inf there as well.
        logits = logits.at[..., mcfg.eot_token_id].set(NEG_INF)
        if scfg.temperature == 0:
            logits = logits.at[..., mcfg.eos_token_id].set(NEG_INF)
    if scfg.remasking == "low_confidence":
        probs = jax.nn.softmax(logits, axis=-1)
        return x0, jnp.take_along_axis(probs, x0[..., None], axis=-1)[..., 0]
    return x0, noise.pos


def scheduled_transfer(scfg: SamplerConfig, conf, j, left=None):
    """[B, bl] bool: the top-k masked positions (``conf`` -inf elsewhere), k from the
    transfer schedule at step j of the block; ties toward the lower index. ``left`` [B]
    (a response template fixes some positions): each row's masked count in the block, k =
    ceil(left / steps left) = LLaDA's schedule of the block's mask count (the same as
    :func:`transfer_schedule` for a block that starts fully masked)."""
    bl = conf.shape[1]
    sched = transfer_schedule(bl, scfg.steps_per_block)
    kmax = max(sched)
    k_t = (jnp.asarray(sched, jnp.int32)[j][None] if left is None
           else -(-left // (scfg.steps_per_block - j)))
    _, top_idx = jax.lax.top_k(conf, kmax)  # [B, kmax], ties -> lower index first
    chosen = (jnp.arange(kmax)[None, :] < k_t[:, None])[:, :, None] & (
        top_idx[:, :, None] == jnp.arange(bl)[None, None, :])
    return jnp.any(chosen, axis=1)


def diffusion_step(ctx: StepContext, state: DiffusionState, t, noise=None):
    """One sampler iteration. ``noise``: this step's :class:`~.common.StepNoise` (drawn from
    the carried key when None)."""
    params, mcfg, scfg, prompt_len, attention_mask, positions, probe, hidden_layer, \
        record_snapshots = ctx
    b, total = state.canvas.shape
    bl, spb = scfg.effective_block_length, scfg.steps_per_block
    mask_id = mcfg.mask_token_id
    x = state.canvas
    blk_start = prompt_len + (t // spb) * bl
    j = t % spb

    ids, amask, pos = x, attention_mask, positions
    if scfg.cfg_scale > 0:
        is_prompt = jnp.arange(total)[None, :] < prompt_len
        un_x = jnp.where(is_prompt, mask_id, x)
        ids = jnp.concatenate([x, un_x])
        amask = jnp.concatenate([attention_mask, attention_mask])
        pos = jnp.concatenate([positions, positions])
    out = forward(params, mcfg, ids, attention_mask=amask, positions=pos,
                  hidden_layer=hidden_layer, compute_logits=False)
    h_blk = jax.lax.dynamic_slice_in_dim(out.hidden, blk_start, bl, axis=1)
    logits = block_logits(params, mcfg, scfg, h_blk, b)  # [B, bl, V] fp32

    key, k_noise, k_rand = jax.random.split(state.key, 3)
    if noise is None:
        noise = draw_noise(k_noise, k_rand, logits.shape, scfg.temperature > 0,
                           scfg.remasking == "random")
    x0, conf = propose(mcfg, scfg, logits, noise)
    x_blk = jax.lax.dynamic_slice_in_dim(x, blk_start, bl, axis=1)
    masked = x_blk == mask_id
    x0 = jnp.where(masked, x0, x_blk)
    left = None if state.fixed is None else jnp.sum(masked, axis=1, dtype=jnp.int32)
    transfer = scheduled_transfer(scfg, jnp.where(masked, conf, NEG_INF), j, left)
    x = jax.lax.dynamic_update_slice_in_dim(x, jnp.where(transfer, x0, x_blk), blk_start, 1)

    phi = pool_response(out, hidden_layer, x, prompt_len, mask_id, scfg.pooling,
                        uncond=scfg.cfg_scale > 0 and scfg.cfg_pool == "uncond",
                        fixed=state.fixed)
    sri = sri_update(state.sri, probe, phi, t, scfg.tau)
    record = StepRecord(phi, project(probe, phi),
                        x[:, prompt_len:] if record_snapshots else None)
    return state._replace(canvas=x, key=key, sri=sri), record


def init_state(mcfg: ModelConfig, scfg: SamplerConfig, input_ids, key, template=None):
    """The canvas: prompt, then the response all masked or, with ``template`` [B, G]
    (infill), the template: its non-mask tokens are fixed from the start."""
    b = input_ids.shape[0]
    resp = (jnp.full((b, scfg.gen_length), mcfg.mask_token_id, jnp.int32) if template is None
            else template.astype(jnp.int32))
    canvas = jnp.concatenate([input_ids.astype(jnp.int32), resp], axis=1)
    fixed = None if template is None else resp != mcfg.mask_token_id
    return DiffusionState(canvas, key, jnp.zeros((b, scfg.steps), jnp.float32), fixed)


def canvas_mask(attention_mask, gen_length: int):
    b = attention_mask.shape[0]
    return jnp.concatenate([attention_mask.astype(jnp.int32),
                            jnp.ones((b, gen_length), jnp.int32)], axis=1)


def diffusion_sample(params, mcfg: ModelConfig, scfg: SamplerConfig, input_ids,
                     attention_mask, key, probe: Probe, *, reads: Reads = Reads(),
                     step_fn=diffusion_step, noise=None, template=None):
    """The fused sampler. Returns (response tokens [B, G], sri [B, T], StepRecord of [B, T, ...]).
    ``step_fn`` is one iteration over the canvas (LLaDA's by default, Dream's in dream.py).
    ``noise``: a :class:`~.common.StepNoise` of arrays with a leading [T] axis, consumed
    instead of the key's draws (tests feed the oracles the same numbers).
    ``template`` [B, G] (infill): the response canvas to start from, see :func:`init_state`."""
    hidden_layer, return_activations, record_snapshots = reads
    prompt_len = input_ids.shape[1]
    amask = canvas_mask(attention_mask, scfg.gen_length)
    positions = default_positions(mcfg, amask)
    state = init_state(mcfg, scfg, input_ids, key, template)
    ctx = StepContext(params, mcfg, scfg, prompt_len, amask, positions, probe, hidden_layer,
                      record_snapshots)

    def body(state, xs):
        t, noise_t = xs
        state, rec = step_fn(ctx, state, t, noise_t)
        if not return_activations:
            rec = rec._replace(phi=None)
        return state, rec

    state, recs = jax.lax.scan(body, state, (jnp.arange(scfg.steps), noise))
    recs = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), recs)  # [B, T, ...]
    return state.canvas[:, prompt_len:], state.sri, recs
