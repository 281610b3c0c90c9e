"""Cached and confidence-threshold (parallel) diffusion decoding in one XLA program, SRI kept.

The semantics are Fast-dLLM's: for LLaDA-style models ``generate_with_prefix_cache`` /
``generate_with_dual_cache`` and ``get_transfer_index`` with a threshold; for Dream-style
models (shifted logits) the block-wise ``_sample`` of its dream/model/generation_utils_block.py
(the differences: :func:`_align`, :func:`_transfer`; docs/sampling.md). Per block (a Python loop over the static block
count: the prefix variant recomputes a suffix that shrinks block by block, so each block has
its own static shapes; the steps of a block are one ``lax.scan``, or one ``lax.while_loop``
with a threshold):

1. the block's first step forwards the whole canvas. With a cache, the keys/values of every
   layer and position are kept ([N, B, S, K, hd]); the SRI layer's output at every response
   position goes to a per-position buffer ``hbuf`` [B, G, D] in the carry.
2. the block's other steps forward only the block and everything after it (``prefix``: the
   keys/values before the block come from the cache) or only the block (``dual``: before and
   after from the cache), attending over the whole canvas; ``hbuf`` is updated at the
   recomputed positions. Without a cache every step forwards the whole canvas.
3. commit: LLaDA's transfer schedule (``steps_per_block`` steps, as the exact sampler) or,
   with ``threshold``, every masked position of the block whose confidence exceeds it
   (strictly) plus the most confident one, until every row's block is done. A row whose
   block is done commits nothing and is not counted in its NFE (forward passes per row).
   Dream: the block's first step commits only its first position, the later ones follow
   Dream's schedule restarted per block (or the threshold rule).
4. phi = ``hbuf`` pooled over the response with the exact sampler's weights.

SRI indexing: a row's progress after a step is p of P (steps taken of T with the schedule,
tokens committed of G with a threshold). Grid point t = 0..T-1 sits at p = (t+1) P / T; the
step that reaches it writes phi_t, linearly interpolated between the previous step's phi and
this one's (the first step's phi for points before it), and sigma_t = sri(phi_t, mu_t). With
the schedule, step t lands exactly on point t: phi_t is step t's phi, as in the exact
sampler. ``return_activations`` returns the same grid, so centers calibrated through
``generate`` with the same config are indexed the same way.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from ..models.config import ModelConfig
from ..models.decoder import KVCache, default_positions, forward, lm_head
from ..sri.signal import sri_step
from .common import Probe, Reads, StepRecord, draw_noise, masked_mean
from .config import SamplerConfig
from .diffusion import (NEG_INF, block_logits, canvas_mask, propose, response_weights,
                        scheduled_transfer)
from .dream import dream_noise, ranked_transfer, sample_tokens, step_fraction


class FastState(NamedTuple):
    canvas: jax.Array            # [B, S] int32
    key: jax.Array
    kv: Optional[KVCache]        # [N, B, S, K, hd] from the block's first step (caches only)
    hbuf: jax.Array              # [B, G, D] the SRI layer's output per response position
    grid: jax.Array              # [B, T, D] fp32 phi at the T grid points
    snaps: Optional[jax.Array]   # [B, T, G] response tokens at the grid points
    phi_prev: jax.Array          # [B, D] fp32 phi after the row's previous step
    progress: jax.Array          # [B] int32 p (see the module docstring)
    nfe: jax.Array               # [B] int32 forward passes in which the row was active


class _Ctx(NamedTuple):
    params: dict
    mcfg: ModelConfig
    scfg: SamplerConfig
    prompt_len: int
    amask: jax.Array
    positions: jax.Array
    hidden_layer: Optional[int]


def _layer_out(ctx: _Ctx, out):
    return out.hidden if ctx.hidden_layer is None else out.layer_hidden


def _full_forward(ctx: _Ctx, state: FastState):
    """Whole canvas: (hidden [B, S, D], hbuf, kv) with every position fresh."""
    b, s = state.canvas.shape
    kv = None
    if ctx.scfg.cache != "none":
        kv = KVCache.zeros(ctx.mcfg, b, s, ctx.params["embed"].dtype)
    out = forward(ctx.params, ctx.mcfg, state.canvas, attention_mask=ctx.amask,
                  positions=ctx.positions, cache=kv, cache_index=0,
                  hidden_layer=ctx.hidden_layer, compute_logits=False)
    return out.hidden, _layer_out(ctx, out)[:, ctx.prompt_len:], out.cache


def _partial_forward(ctx: _Ctx, state: FastState, lo: int):
    """The block (``dual``) or the block and its suffix (``prefix``) against the cached
    keys/values: (hidden of the recomputed positions [B, L, D], hbuf updated there)."""
    hi = state.canvas.shape[1] if ctx.scfg.cache == "prefix" else lo + ctx.scfg.block_length
    out = forward(ctx.params, ctx.mcfg, state.canvas[:, lo:hi], attention_mask=ctx.amask,
                  positions=ctx.positions[:, lo:hi], cache=state.kv, cache_index=lo,
                  hidden_layer=ctx.hidden_layer, compute_logits=False)
    p = ctx.prompt_len
    hbuf = state.hbuf.at[:, lo - p:hi - p].set(_layer_out(ctx, out).astype(state.hbuf.dtype))
    return out.hidden, hbuf


def grid_points(p_prev, p, total: int, t_pts: int):
    """The grid points a step reaches: hit [B, T] where p_prev < (t+1) total / T <= p, and
    alpha [B, T], the point's place between p_prev (0) and p (1)."""
    num = jnp.arange(1, t_pts + 1) * total  # grid point t sits at progress num / T
    hit = (p_prev[:, None] * t_pts < num) & (num <= p[:, None] * t_pts)
    alpha = ((num.astype(jnp.float32) / t_pts - p_prev[:, None])
             / jnp.maximum(p - p_prev, 1)[:, None].astype(jnp.float32))
    return hit, alpha


def _align(ctx: _Ctx, chunk, first: bool):
    """The final-norm hidden states whose logits predict the block's positions, from the
    forwarded ``chunk`` (starting at the block; at a Dream block's first step one position
    earlier). LLaDA: the block's own [B, bl, D]. Dream (shifted logits), as Fast-dLLM: the
    block's first step commits only its first position, predicted from the position before
    the block ([B, 1, D]); later steps shift inside the chunk, ``cat(h[:1], h[:-1])``, so
    the block's first position reads its own state, a placeholder never used (it is
    committed)."""
    bl = ctx.scfg.block_length
    if not ctx.mcfg.logits_shift:
        return chunk[:, :bl]
    if first:
        return chunk[:, :1]
    return jnp.concatenate([chunk[:, :1], chunk[:, :bl - 1]], axis=1)


def _propose(ctx: _Ctx, state: FastState, h_blk):
    """(x0, confidence, position uniforms) for the positions of ``h_blk`` [B, n, D]: LLaDA's
    proposal, or Dream's ``sample_tokens`` with ``dream_alg``'s confidence."""
    scfg, mcfg = ctx.scfg, ctx.mcfg
    if mcfg.logits_shift:
        logits = lm_head(ctx.params, mcfg, h_blk)
        noise = dream_noise(state.key, logits.shape, scfg)
        conf, x0 = sample_tokens(logits, noise.tok, scfg)
        return x0, conf, noise.pos
    logits = block_logits(ctx.params, mcfg, scfg, h_blk, h_blk.shape[0])
    _, k_noise, k_rand = jax.random.split(state.key, 3)
    noise = draw_noise(k_noise, k_rand, logits.shape, scfg.temperature > 0,
                       scfg.remasking == "random")
    x0, conf = propose(mcfg, scfg, logits, noise)
    return x0, conf, noise.pos


def _transfer(ctx: _Ctx, conf, masked, j, u_pos, first: bool):
    """[B, n] bool: the positions committed at step j of the block."""
    scfg, shift = ctx.scfg, ctx.mcfg.logits_shift
    if shift and first:
        return masked  # Dream: the block's first position (n = 1), unconditionally
    if scfg.threshold is not None:
        conf = jnp.where(masked, conf, NEG_INF)
        best = jnp.arange(conf.shape[1])[None, :] == jnp.argmax(conf, axis=1)[:, None]
        return masked & ((conf > scfg.threshold) | best)
    if not shift:
        return scheduled_transfer(scfg, jnp.where(masked, conf, NEG_INF), j)
    # Dream's schedule over the block's steps (Fast-dLLM: timesteps of steps_per_block + 1
    # points, steps 1.. after the first), k from the row's masked count in the block
    frac, last = step_fraction(scfg, scfg.steps_per_block, j)
    num_mask = jnp.sum(masked, axis=1).astype(jnp.float32)
    return ranked_transfer(scfg, conf, masked, frac, last, num_mask, u_pos)


def _commit(ctx: _Ctx, state: FastState, h_blk, lo: int, j, first: bool):
    """Choose and write this step's tokens: (canvas, key, active [B])."""
    n, bl = h_blk.shape[1], ctx.scfg.block_length
    mask_id = ctx.mcfg.mask_token_id
    x0, conf, u_pos = _propose(ctx, state, h_blk)
    x_blk = state.canvas[:, lo:lo + n]
    masked = x_blk == mask_id
    transfer = _transfer(ctx, conf, masked, j, u_pos, first)
    canvas = state.canvas.at[:, lo:lo + n].set(jnp.where(transfer, x0, x_blk))
    # With the schedule every row takes every step (as the exact sampler); with a threshold a
    # row whose block is done idles, so that its result does not depend on its batch.
    active = jnp.any(state.canvas[:, lo:lo + bl] == mask_id, axis=1)
    if ctx.scfg.threshold is None:
        active = jnp.ones_like(active)
    return canvas, jax.random.split(state.key, 3)[0], active


def _step(ctx: _Ctx, state: FastState, lo: int, j, full: bool, refresh: bool = False,
          first: bool = False):
    """One decoding step of the block starting at canvas position ``lo`` (``first``: the
    block's first step)."""
    kv, hbuf = state.kv, state.hbuf
    if full or refresh:
        hidden, new_hbuf, kv = _full_forward(ctx, state)
        chunk = hidden[:, lo - 1:] if first and ctx.mcfg.logits_shift else hidden[:, lo:]
    if not full:
        state = state._replace(kv=kv, hbuf=new_hbuf) if refresh else state
        chunk, new_hbuf = _partial_forward(ctx, state, lo)
    canvas, key, active = _commit(ctx, state, _align(ctx, chunk, first), lo, j, first)
    hbuf = jnp.where(active[:, None, None], new_hbuf.astype(hbuf.dtype), hbuf)
    p0 = ctx.prompt_len
    phi = masked_mean(hbuf, response_weights(canvas[:, p0:], ctx.mcfg.mask_token_id,
                                             ctx.scfg.pooling))
    nfe = state.nfe + active
    if ctx.scfg.threshold is None:
        progress, total = nfe, ctx.scfg.steps
    else:
        progress = jnp.sum(canvas[:, p0:] != ctx.mcfg.mask_token_id, axis=1, dtype=jnp.int32)
        total = ctx.scfg.gen_length
    phi_prev = jnp.where((state.nfe == 0)[:, None], phi, state.phi_prev)
    hit, alpha = grid_points(state.progress, progress, total, ctx.scfg.steps)
    value = (1 - alpha)[..., None] * phi_prev[:, None] + alpha[..., None] * phi[:, None]
    grid = jnp.where(hit[..., None], value, state.grid)
    snaps = state.snaps
    if snaps is not None:
        snaps = jnp.where(hit[..., None], canvas[:, None, p0:], snaps)
    phi_prev = jnp.where(active[:, None], phi, state.phi_prev)
    return FastState(canvas, key, kv if full else state.kv, hbuf, grid, snaps, phi_prev,
                     progress, nfe)


def _block(ctx: _Ctx, state: FastState, lo: int, refresh: bool):
    """Every step of the block at ``lo``: the first one full, then schedule or threshold."""
    scfg = ctx.scfg
    state = _step(ctx, state, lo, 0, full=True, first=True)
    step = functools.partial(_step, ctx, lo=lo, full=scfg.cache == "none", refresh=refresh)
    if scfg.threshold is not None:
        # At most block_length steps: each commits >= 1 token per unfinished row, unless a
        # row commits the mask id itself (untrained weights), which must not loop forever.
        mask_id, bl = ctx.mcfg.mask_token_id, scfg.block_length
        return jax.lax.while_loop(
            lambda c: (c[1] < bl) & jnp.any(c[0].canvas[:, lo:lo + bl] == mask_id),
            lambda c: (step(c[0], j=None), c[1] + 1), (state, 1))[0]
    return jax.lax.scan(lambda s, j: (step(s, j=j), None), state,
                        jnp.arange(1, scfg.steps_per_block))[0]


def check_fast(mcfg: ModelConfig, scfg: SamplerConfig) -> None:
    """One ValueError listing what of a cached / threshold ``scfg`` ``mcfg``'s model cannot
    run; nothing for the exact sampler."""
    if not scfg.fast:
        return
    if mcfg.causal:
        raise ValueError("cache/threshold decoding is for diffusion models; use cache='none', "
                         "threshold=None")
    errs = []
    if mcfg.logits_shift and scfg.dream_alg == "origin":
        errs.append("dream_alg 'origin' reveals positions at random, block decoding ranks "
                    "them: use maskgit_plus, topk_margin or entropy")
    if mcfg.logits_shift and scfg.threshold is not None:
        if scfg.dream_alg == "entropy":
            errs.append("a threshold compares probabilities and dream_alg 'entropy' scores "
                        "by negative entropy: use maskgit_plus or topk_margin")
        if scfg.dream_alg_temp > 0:
            errs.append("a threshold commits by confidence, dream_alg_temp draws positions "
                        "at random: leave dream_alg_temp at 0")
    elif mcfg.logits_shift and scfg.steps_per_block < 2:
        errs.append(f"a Dream block's first step commits only its first position, so each of "
                    f"the {scfg.num_blocks} blocks needs >= 2 steps: raise steps "
                    f"({scfg.steps}) or block_length ({scfg.block_length})")
    if errs:
        raise ValueError("cached/threshold Dream decoding: " + "; ".join(errs))


def fast_diffusion_sample(params, mcfg: ModelConfig, scfg: SamplerConfig, input_ids,
                          attention_mask, key, probe: Probe, *, reads: Reads = Reads(),
                          refresh_each_step=False):
    """Cached / threshold LLaDA sampling (``scfg.cache``, ``scfg.threshold``). Returns
    (tokens [B, G], sri [B, T], StepRecord of [B, T, ...], nfe [B] int32), the first three as
    :func:`~.diffusion.diffusion_sample`. ``refresh_each_step`` (tests): recompute the cache
    from the current canvas before every cached step, which must reproduce the exact sampler."""
    check_fast(mcfg, scfg)
    hidden_layer, return_activations, record_snapshots = reads
    b, p0 = input_ids.shape
    g, t_pts, d = scfg.gen_length, scfg.steps, mcfg.hidden_size
    amask = canvas_mask(attention_mask, g)
    ctx = _Ctx(params, mcfg, scfg, p0, amask, default_positions(mcfg, amask), hidden_layer)
    canvas = jnp.concatenate([input_ids.astype(jnp.int32),
                              jnp.full((b, g), mcfg.mask_token_id, jnp.int32)], axis=1)
    zeros = functools.partial(jnp.zeros, dtype=jnp.float32)
    state = FastState(canvas, key, None, jnp.zeros((b, g, d), params["embed"].dtype),
                      zeros((b, t_pts, d)),
                      jnp.zeros((b, t_pts, g), jnp.int32) if record_snapshots else None,
                      zeros((b, d)), jnp.zeros((b,), jnp.int32), jnp.zeros((b,), jnp.int32))
    if scfg.cache != "none":  # the carry's structure must not change inside the loops
        state = state._replace(kv=KVCache.zeros(mcfg, b, p0 + g, params["embed"].dtype))
    for blk in range(scfg.num_blocks):
        state = _block(ctx, state, p0 + blk * scfg.block_length, refresh_each_step)
    sri = jnp.zeros((b, t_pts), jnp.float32)
    if probe.mu_harmless is not None:
        sri = sri_step(state.grid, probe.mu_harmless[None], probe.mu_harmful[None], scfg.tau)
    proj = None if probe.direction is None else state.grid @ probe.direction
    recs = StepRecord(state.grid if return_activations else None, proj, state.snaps)
    return state.canvas[:, p0:], sri, recs, state.nfe
