"""Independent oracles: plain step-by-step loops and numpy SRI math, written the way the
reference code is (one forward pass per step over the whole sequence, host-side selection).

They use only ``Model.forward`` (itself checked against HF transformers) and numpy, follow
upstream's code path literally (LLaDA's float64 ``exp(logits) / (-log u) ** T`` Gumbel noise,
torch's multinomial as ``p / E``), and take their random numbers as explicit inputs: a test
draws uniforms with numpy and hands the same arrays to the fused sampler (``noise=``), so
temperature > 0 is compared draw for draw without the oracle knowing the port's key stream.
"""

from __future__ import annotations

import numpy as np


def np_sri(phi, mu_pos, mu_neg, tau=0.1, eps=1e-8):
    """sigma = sigmoid((log(d- + eps) - log(d+ + eps)) / tau) in float64."""
    phi, mu_pos, mu_neg = (np.asarray(a, np.float64) for a in (phi, mu_pos, mu_neg))

    def dist(a, b):
        return np.maximum(1 - (a * b).sum(-1) / ((np.linalg.norm(a, axis=-1) + eps)
                                                  * (np.linalg.norm(b, axis=-1) + eps)), 0)

    z = (np.log(dist(phi, mu_neg) + eps) - np.log(dist(phi, mu_pos) + eps)) / tau
    return 1 / (1 + np.exp(-z))


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def add_gumbel_noise(logits, temperature, u):
    """Upstream LLaDA's ``add_gumbel_noise`` with the uniforms ``u`` given: float64
    ``exp(logits) / (-log u) ** T``; at T = 0 the logits array itself (upstream returns the
    same tensor, which the ``confidence_eos_eot_inf`` assignment then writes through)."""
    if temperature == 0:
        return logits
    logits = logits.astype(np.float64)
    gumbel_noise = (-np.log(np.asarray(u, np.float64))) ** temperature
    return np.exp(logits) / gumbel_noise


def _block_noise(arr, t, shape, lo, hi, fill=0.5):
    """Step t's uniforms for the whole canvas (``shape``), the given block values at
    positions lo:hi; elsewhere a constant: those positions can never be committed."""
    full = np.full(shape, fill)
    if arr is not None:
        full[:, lo:hi] = np.asarray(arr[t], np.float64)
    return full


def llada_loop(model, input_ids, attention_mask, *, steps, gen_length, block_length,
               temperature=0.0, remasking="low_confidence", cfg_scale=0.0,
               logits_eos_inf=False, confidence_eos_eot_inf=False, noise=None, layer=None,
               pooling="all", cfg_pool="cond", prefix=None, template=None):
    """LLaDA's ``generate()`` as upstream writes it, in numpy float64, one forward per step.
    Returns (tokens [B, G], phi [B, T, D]).

    ``noise``: the random numbers, given explicitly (so both sides consume the same ones):
    ``noise.tok[t]`` [B, block_length, V] uniforms of step t's block for the Gumbel noise,
    ``noise.pos[t]`` [B, block_length] for ``random`` remasking (upstream ``torch.rand``).
    ``cfg_pool`` "uncond": phi from the CFG pass with the prompt masked (the reference
    hook reads the last row of the doubled batch).
    ``prefix`` [B, n] (prefilling): the response canvas is n + gen_length long, its first n
    positions hold the prefix from the start and are never masked or chosen; the blocks and
    the pooled positions are the gen_length after it. Returns only those.
    ``template`` [B, G] (infill): the response canvas starts as it; its non-mask tokens are
    never chosen (asserted every step) and are left out of the pooling."""
    mcfg = model.config
    mask_id, eos, eot = mcfg.mask_token_id, mcfg.eos_token_id, mcfg.eot_token_id
    ids = np.asarray(input_ids)
    b, p0 = ids.shape
    fixed = np.zeros((b, 0), int) if prefix is None else np.asarray(prefix)
    resp = np.full((b, gen_length), mask_id) if template is None else np.array(template)
    gen = resp == mask_id
    x = np.concatenate([ids, fixed, resp], 1)
    amask = np.concatenate([np.asarray(attention_mask), np.ones((b, fixed.shape[1] + gen_length),
                                                                int)], 1)
    prompt_index = np.zeros_like(x, bool)
    prompt_index[:, :p0] = True
    p = p0 + fixed.shape[1]  # first generated position
    num_blocks = gen_length // block_length
    spb = steps // num_blocks
    phis = []
    for nb in range(num_blocks):
        lo, hi = p + nb * block_length, p + (nb + 1) * block_length
        n_mask = (x[:, lo:hi] == mask_id).sum(1)
        num_transfer = np.zeros((b, spb), int) + (n_mask // spb)[:, None]
        for r in range(b):
            num_transfer[r, : n_mask[r] % spb] += 1
        for i in range(spb):
            t = nb * spb + i
            mask_index = x == mask_id
            if cfg_scale > 0:
                un = x.copy()
                un[prompt_index] = mask_id
                out = model.forward(np.concatenate([x, un]), np.concatenate([amask, amask]),
                                    layer=layer)
                lg = np.asarray(out.logits, np.float64)
                logits = lg[b:] + (cfg_scale + 1) * (lg[:b] - lg[b:])
            else:
                out = model.forward(x, amask, layer=layer)
                logits = np.asarray(out.logits, np.float64)
            if logits_eos_inf:
                logits[:, :, eos] = -np.inf
            u = None
            if temperature > 0:
                u = _block_noise(noise.tok, t, logits.shape, lo, hi)
            logits_with_noise = add_gumbel_noise(logits, temperature, u)
            x0 = np.argmax(logits_with_noise, -1)
            if confidence_eos_eot_inf:
                logits_with_noise[:, :, eos] = logits[:, :, eot] = -np.inf
            if remasking == "low_confidence":
                x0_p = np.take_along_axis(_softmax(logits), x0[..., None], -1)[..., 0]
            else:
                x0_p = _block_noise(noise.pos, t, x0.shape, lo, hi)
            x0_p[:, hi:] = -np.inf
            x0 = np.where(mask_index, x0, x)
            confidence = np.where(mask_index, x0_p, -np.inf)
            for r in range(b):
                sel = np.argsort(-confidence[r], kind="stable")[:num_transfer[r, i]]
                x[r, sel] = x0[r, sel]
            hid = np.asarray(out.hidden if layer is None else out.layer_hidden, np.float64)
            h = (hid[b:] if cfg_scale > 0 and cfg_pool == "uncond" else hid[:b])[:, p:]
            if pooling == "committed":
                w = ((x[:, p:] != mask_id) & gen).astype(np.float64)
                none = w.sum(1) == 0
                w[none] = gen[none]
            else:
                w = gen.astype(np.float64)
            phis.append((h * w[..., None]).sum(1) / w.sum(1, keepdims=True))
            assert (x[:, p0:p] == fixed).all()  # the prefix never changes
            assert (x[:, p:][~gen] == resp[~gen]).all()  # nor the template
    return x[:, p:], np.stack(phis, 1)


def ar_loop(model, input_ids, attention_mask, *, gen_length, layer=None, forced=None):
    """The reference AR loop: greedy, NO KV cache (the whole sequence is re-run every step),
    hidden state at the last position, running mean, EOS repeats the last hidden state.
    ``forced`` (prefilling: one token list per row): the first len(forced[r]) steps emit
    those tokens instead of the argmax; they are not steps of the result (neither tokens nor
    the running mean): gen_length tokens are generated after them."""
    mcfg = model.config
    stops = {t for t in (mcfg.eos_token_id, mcfg.eot_token_id) if t is not None}
    pad = mcfg.pad_token_id if mcfg.pad_token_id is not None else mcfg.eos_token_id
    ids = np.asarray(input_ids)
    mask = np.asarray(attention_mask)
    b = ids.shape[0]
    tokens = np.full((b, gen_length), pad)
    phis = np.zeros((b, gen_length, mcfg.hidden_size))
    for r in range(b):  # one prompt at a time, as the reference does
        seq = ids[r][mask[r] == 1].tolist()
        force = [] if forced is None else [int(f) for f in forced[r]]
        hs = []
        for t in range(-len(force), gen_length):
            out = model.forward(np.asarray([seq]), layer=layer)
            if t < 0:
                seq.append(force[t + len(force)])
                continue
            hid = out.hidden if layer is None else out.layer_hidden
            hs.append(np.asarray(hid, np.float64)[0, -1])
            tok = int(np.argmax(np.asarray(out.logits)[0, -1]))
            tokens[r, t] = tok
            if tok in stops:
                break
            seq.append(tok)
        hs += [hs[-1]] * (gen_length - len(hs))
        phis[r] = np.cumsum(np.stack(hs), 0) / np.arange(1, gen_length + 1)[:, None]
    return tokens, phis


def top_p_logits(logits, top_p):
    """Dream's ``top_p_logits``: descending sort, drop where the cumulative probability
    exceeds top_p, shifted right by one so the crossing token stays, the top one always."""
    order = np.argsort(-logits, -1, kind="stable")
    sorted_logits = np.take_along_axis(logits, order, -1)
    remove_sorted = np.cumsum(_softmax(sorted_logits), -1) > top_p
    remove_sorted[..., 1:] = remove_sorted[..., :-1].copy()
    remove_sorted[..., 0] = False
    remove = np.zeros_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, -1)
    return np.where(remove, np.finfo(logits.dtype).min, logits)


def top_k_logits(logits, top_k):
    """Dream's ``top_k_logits``: drop logits below the k-th largest."""
    top_k = min(top_k, logits.shape[-1])
    kth = -np.sort(-logits, -1)[..., top_k - 1:top_k]
    return np.where(logits < kth, np.finfo(logits.dtype).min, logits)


def dream_sample_tokens(logits, temperature=0.0, top_p=None, top_k=None,
                        margin_confidence=False, neg_entropy=False, u=None):
    """Dream's ``sample_tokens`` on [N, V] logits. The draw ``Categorical(probs).sample()``
    is torch's multinomial, which takes ``argmax(probs / E)`` with E ~ Exp(1) (ATen's path for
    one sample; checked in tests/test_sampling.py); here E = -log u with ``u`` given."""
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = top_p_logits(logits, top_p)
    if top_k is not None:
        logits = top_k_logits(logits, top_k)
    probs = _softmax(logits)
    if temperature > 0:
        x0 = np.argmax(probs / -np.log(u), -1)
        confidence = np.take_along_axis(probs, x0[:, None], -1)[:, 0]
    else:
        confidence, x0 = probs.max(-1), probs.argmax(-1)
    if margin_confidence:
        sorted_probs = -np.sort(-probs, -1)
        confidence = sorted_probs[:, 0] - sorted_probs[:, 1]
    if neg_entropy:
        confidence = (probs * np.log(probs + 1e-10)).sum(-1)
    return confidence, x0


def dream_loop(model, input_ids, attention_mask, *, steps, gen_length, alg="maskgit_plus",
               eps=1e-3, temperature=0.0, top_p=None, top_k=None, alg_temp=0.0, noise=None,
               prefix=None, template=None):
    """Dream's ``_sample()`` as upstream writes it, in numpy float64. Returns (tokens, phi).

    ``noise``: the random numbers, given explicitly: ``noise.tok[i]`` [B, G, V] uniforms of
    step i for the token draws, ``noise.pos[i]`` [B, G] for ``origin``'s reveals
    (``torch.rand`` over the masked positions, in their row-major order) and for
    ``alg_temp``'s ``torch.multinomial`` without replacement, which is ``topk(p / E)`` with
    E = -log u (ATen's path without replacement).
    ``prefix`` [B, n]: fixed tokens at the start of the response canvas (never masked);
    the pooled positions and the result are the gen_length after them.
    ``template`` [B, G] (infill): the response canvas starts as it; its non-mask tokens never
    change (asserted every step) and are left out of the pooling."""
    mcfg = model.config
    mask_id = mcfg.mask_token_id
    ids = np.asarray(input_ids)
    b, p0 = ids.shape
    fixed = np.zeros((b, 0), int) if prefix is None else np.asarray(prefix)
    resp = np.full((b, gen_length), mask_id) if template is None else np.array(template)
    gen = resp == mask_id
    x = np.concatenate([ids, fixed, resp], 1)
    amask = np.concatenate([np.asarray(attention_mask), np.ones((b, fixed.shape[1] + gen_length),
                                                                int)], 1)
    p = p0 + fixed.shape[1]  # first generated position
    timesteps = np.linspace(1, eps, steps + 1, dtype=np.float32)
    phis = []
    for i in range(steps):
        mask_index = x == mask_id
        out = model.forward(x, amask)
        logits = np.asarray(out.logits, np.float64)
        logits = np.concatenate([logits[:, :1], logits[:, :-1]], 1)  # the one-position shift
        u_tok = _block_noise(noise.tok if noise else None, i, logits.shape, p, p + gen_length)
        u_pos = _block_noise(noise.pos if noise else None, i, x.shape, p, p + gen_length)
        mask_logits, mask_u = logits[mask_index], u_tok[mask_index]
        t, s = timesteps[i], timesteps[i + 1]
        sampling = dict(temperature=temperature, top_p=top_p, top_k=top_k)
        if alg == "origin":
            p_transfer = 1 - s / t if i < steps - 1 else 1
            x0 = np.zeros(mask_logits.shape[0], int) + mask_id
            transfer_index_t_s = u_pos[mask_index] < p_transfer
            _, x0[transfer_index_t_s] = dream_sample_tokens(
                mask_logits[transfer_index_t_s], u=mask_u[transfer_index_t_s], **sampling)
            x[mask_index] = x0
        else:
            confidence, x0 = dream_sample_tokens(
                mask_logits, margin_confidence=alg == "topk_margin",
                neg_entropy=alg == "entropy", u=mask_u, **sampling)
            num_mask_token = np.float32(mask_index.sum() / mask_index.shape[0])
            n = (int(num_mask_token * (np.float32(1) - s / t)) if i < steps - 1
                 else int(num_mask_token))
            full_confidence = np.full(x.shape, -np.inf)
            full_confidence[mask_index] = confidence
            if n > 0:
                if alg_temp is None or alg_temp == 0:
                    score = full_confidence
                else:
                    score = _softmax(full_confidence / alg_temp) / -np.log(u_pos)
                transfer_index = np.stack([np.argsort(-row, kind="stable")[:n] for row in score])
                x_ = np.zeros_like(x) + mask_id
                x_[mask_index] = x0
                rows = np.arange(b)[:, None]
                x[rows, transfer_index] = x_[rows, transfer_index]
        h = np.asarray(out.hidden, np.float64)[:, p:]
        phis.append((h * gen[..., None]).sum(1) / gen.sum(1, keepdims=True))
        assert (x[:, p0:p] == fixed).all()  # the prefix never changes
        assert (x[:, p:][~gen] == resp[~gen]).all()  # nor the template
    return x[:, p:], np.stack(phis, 1)


def llada_threshold_loop(model, input_ids, attention_mask, *, gen_length, block_length,
                         threshold, steps):
    """Fast-dLLM's confidence-threshold decoding without a cache (``get_transfer_index``
    with a threshold: the most confident masked position of the block and every other one
    whose confidence exceeds the threshold), temperature 0, low_confidence, one row at a
    time in numpy float64; a block's steps repeat until it has no mask.
    Returns (tokens [B, G], phi [B, T, D] read at committed fractions t/T by linear
    interpolation over the row's steps (np.interp: before its first step, that step's phi),
    nfe [B])."""
    mask_id = model.config.mask_token_id
    toks, grids, nfes = [], [], []
    for row, m in zip(np.asarray(input_ids), np.asarray(attention_mask)):
        p, x, amask = _one_row_canvas(row, m, gen_length, mask_id)
        counts, phis = [], []
        for lo in range(p, p + gen_length, block_length):
            hi = lo + block_length
            while (x[0, lo:hi] == mask_id).any():
                out = model.forward(x, amask)
                logits = np.asarray(out.logits, np.float64)[0]
                x0 = logits.argmax(-1)
                conf = np.take_along_axis(_softmax(logits), x0[:, None], -1)[:, 0]
                conf[(x[0] != mask_id) | (np.arange(x.shape[1]) >= hi)] = -np.inf
                order = np.argsort(-conf, kind="stable")
                sel = [order[0]] + [i for i in order[1:] if conf[i] > threshold]
                x[0, sel] = x0[sel]
                counts.append(int((x[0, p:] != mask_id).sum()))
                phis.append(np.asarray(out.hidden, np.float64)[0, p:].mean(0))
        grids.append(committed_grid(counts, phis, gen_length, steps))
        toks.append(x[0, p:])
        nfes.append(len(counts))
    return np.stack(toks), np.stack(grids), np.array(nfes)


def _one_row_canvas(row, m, gen_length, mask_id):
    """(prompt length, canvas [1, P + G] with the response masked, its attention mask)."""
    x = np.concatenate([row, np.full(gen_length, mask_id)])[None]
    return len(row), x, np.concatenate([m, np.ones(gen_length, int)])[None]


def committed_grid(counts, phis, gen_length, steps):
    """phi [T, D] read at committed counts (t + 1) G / T by linear interpolation over a row's
    steps (``counts`` committed after each, ``phis`` its pooled phi; before the first step:
    that step's phi)."""
    phis = np.stack(phis)
    targets = np.arange(1, steps + 1) * gen_length / steps
    return np.stack([np.interp(targets, counts, phis[:, d]) for d in range(phis.shape[1])], -1)


def dream_block_loop(model, input_ids, attention_mask, *, gen_length, block_length, steps,
                     alg="entropy", eps=1e-3, threshold=None):
    """Fast-dLLM's block-wise Dream sampler (dream/model/generation_utils_block.py
    ``_sample``) with its cache recomputed before every step, greedy, one row at a time in
    float64. Per block: a forward of the whole canvas whose shifted logits commit the block's
    first position; then the cached forward of the block and what follows it, whose logits
    are shifted inside that chunk (``cat(l[:1], l[:-1])``), and either Dream's schedule
    (steps 1 .. steps_per_block - 1 on linspace(1, eps, steps_per_block + 1), confidence by
    ``alg``; upstream hard-codes entropy) or, with ``threshold``, the most confident masked
    position of the block and every other one above the threshold (strictly, as the port;
    upstream keeps >=) until the block is done. Upstream's forward at the iteration that
    only breaks (i == steps_per_block) commits nothing and is not taken here.
    Returns (tokens [B, G], phi [B, T, D], nfe [B]); phi at the T points: the steps'
    pooled phi (schedule) or :func:`committed_grid` (threshold)."""
    mask_id = model.config.mask_token_id
    spb = steps // (gen_length // block_length)
    timesteps = np.linspace(1, eps, spb + 1, dtype=np.float32)
    sampling = dict(margin_confidence=alg == "topk_margin", neg_entropy=alg == "entropy")
    toks, grids, nfes = [], [], []
    for row, m in zip(np.asarray(input_ids), np.asarray(attention_mask)):
        p, x, amask = _one_row_canvas(row, m, gen_length, mask_id)
        counts, phis = [], []

        def forward():
            out = model.forward(x, amask)
            phis.append(np.asarray(out.hidden, np.float64)[0, p:].mean(0))
            return np.asarray(out.logits, np.float64)[0]

        for lo in range(p, p + gen_length, block_length):
            hi = lo + block_length
            logits = forward()
            logits = np.concatenate([logits[:1], logits[:-1]])
            x[0, lo] = dream_sample_tokens(logits)[1][lo]
            counts.append(int((x[0, p:] != mask_id).sum()))
            i = 1
            while threshold is not None or i < spb:
                logits = forward()[lo:]  # what the cached forward of x[:, lo:] returns
                logits = np.concatenate([logits[:1], logits[:-1]])
                mask_index = x[0, lo:] == mask_id
                mask_index[block_length:] = False
                conf, x0 = dream_sample_tokens(logits[mask_index], **sampling)
                full_confidence = np.full(mask_index.shape, -np.inf)
                full_confidence[mask_index] = conf
                x_ = np.full(mask_index.shape, mask_id)
                x_[mask_index] = x0
                order = np.argsort(-full_confidence, kind="stable")
                if threshold is not None:
                    sel = [order[0]] + [k for k in order[1:mask_index.sum()]
                                        if full_confidence[k] > threshold]
                else:
                    t, s = timesteps[i], timesteps[i + 1]
                    num = np.float32(mask_index.sum())
                    n = int(num * (np.float32(1) - s / t)) if i < spb - 1 else int(num)
                    sel = order[:n]
                    i += 1
                x[0, lo:][sel] = x_[sel]
                counts.append(int((x[0, p:] != mask_id).sum()))
                if not (x[0, lo:hi] == mask_id).any():
                    break
        grids.append(np.stack(phis) if threshold is None
                     else committed_grid(counts, phis, gen_length, steps))
        toks.append(x[0, p:])
        nfes.append(len(counts))
    return np.stack(toks), np.stack(grids), np.array(nfes)
