"""Independent oracles: plain step-by-step loops and numpy SRI math, written the way the
reference code is (one forward pass per step over the whole sequence, host-side selection).

They use only ``Model.forward`` (itself checked against HF transformers) and numpy; the
random draws reuse the fused samplers' key stream so temperature > 0 can be compared.
"""

from __future__ import annotations

import jax
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


def llada_loop(model, input_ids, attention_mask, *, steps, gen_length, block_length,
               temperature=0.0, remasking="low_confidence", cfg_scale=0.0, seed=0,
               layer=None, pooling="all"):
    """LLaDA's generate() as a plain Python loop. Returns (tokens [B, G], phi [B, T, D])."""
    mcfg = model.config
    mask_id = mcfg.mask_token_id
    ids = np.asarray(input_ids)
    b, p = ids.shape
    x = np.concatenate([ids, np.full((b, gen_length), mask_id)], 1)
    amask = np.concatenate([np.asarray(attention_mask), np.ones((b, gen_length), int)], 1)
    prompt_index = np.zeros_like(x, bool)
    prompt_index[:, :p] = True
    num_blocks = gen_length // block_length
    spb = steps // num_blocks
    key = jax.random.key(seed)
    phis = []
    for nb in range(num_blocks):
        lo, hi = p + nb * block_length, p + (nb + 1) * block_length
        n_mask = (x[:, lo:hi] == mask_id).sum(1)
        num_transfer = np.zeros((b, spb), int) + (n_mask // spb)[:, None]
        for r in range(b):
            num_transfer[r, : n_mask[r] % spb] += 1
        for i in range(spb):
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
            hid = out.hidden if layer is None else out.layer_hidden
            key, k_noise, k_rand = jax.random.split(key, 3)
            blk = logits[:, lo:hi]
            if temperature > 0:
                u = np.asarray(jax.random.uniform(k_noise, blk.shape, minval=np.finfo(np.float32).tiny))
                x0_blk = np.argmax(blk + temperature * -np.log(-np.log(u.astype(np.float64))), -1)
            else:
                x0_blk = np.argmax(blk, -1)
            x0 = x.copy()
            x0[:, lo:hi] = x0_blk
            if remasking == "low_confidence":
                conf_blk = np.take_along_axis(_softmax(blk), x0_blk[..., None], -1)[..., 0]
            else:
                conf_blk = np.asarray(jax.random.uniform(k_rand, x0_blk.shape))
            x0_p = np.full(x.shape, -np.inf)
            x0_p[:, lo:hi] = conf_blk
            x0_p[:, hi:] = -np.inf
            x0 = np.where(mask_index, x0, x)
            confidence = np.where(mask_index, x0_p, -np.inf)
            for r in range(b):
                k = num_transfer[r, i]
                sel = np.argsort(-confidence[r], kind="stable")[:k]
                x[r, sel] = x0[r, sel]
            h = np.asarray(hid, np.float64)[:b, p:]
            if pooling == "committed":
                w = (x[:, p:] != mask_id).astype(np.float64)
                w[w.sum(1) == 0] = 1.0
            else:
                w = np.ones((b, gen_length))
            phis.append((h * w[..., None]).sum(1) / w.sum(1, keepdims=True))
    return x[:, p:], np.stack(phis, 1)


def ar_loop(model, input_ids, attention_mask, *, gen_length, layer=None):
    """The reference AR loop: greedy, NO KV cache (the whole sequence is re-run every step),
    hidden state at the last position, running mean, EOS repeats the last hidden state."""
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
        hs = []
        for t in range(gen_length):
            out = model.forward(np.asarray([seq]), layer=layer)
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


def dream_loop(model, input_ids, attention_mask, *, steps, gen_length, alg="maskgit_plus",
               eps=1e-3, seed=0):
    """Dream's _sample() as a plain loop (temperature 0). Returns (tokens, phi)."""
    mcfg = model.config
    mask_id = mcfg.mask_token_id
    ids = np.asarray(input_ids)
    b, p = ids.shape
    x = np.concatenate([ids, np.full((b, gen_length), mask_id)], 1)
    amask = np.concatenate([np.asarray(attention_mask), np.ones((b, gen_length), int)], 1)
    timesteps = np.linspace(1, eps, steps + 1, dtype=np.float32)
    key = jax.random.key(seed)
    phis = []
    for i in range(steps):
        mask_index = x == mask_id
        out = model.forward(x, amask)
        logits = np.asarray(out.logits, np.float64)
        logits = np.concatenate([logits[:, :1], logits[:, :-1]], 1)  # the one-position shift
        t, s = timesteps[i], timesteps[i + 1]
        key, _, k_pos = jax.random.split(key, 3)
        probs = _softmax(logits)
        x0_all = probs.argmax(-1)
        conf_all = probs.max(-1)
        if alg == "topk_margin":
            srt = np.sort(probs, -1)
            conf_all = srt[..., -1] - srt[..., -2]
        elif alg == "entropy":
            conf_all = (probs * np.log(probs + 1e-10)).sum(-1)
        if alg == "origin":
            p_transfer = 1 - s / t if i < steps - 1 else 1.0
            u = np.zeros(x.shape)
            u[:, p:] = np.asarray(jax.random.uniform(k_pos, (b, gen_length)))
            transfer = mask_index & (u < p_transfer)
            x[transfer] = x0_all[transfer]
        else:
            num_mask = np.float32(mask_index.sum() / b)
            n = int(num_mask * (np.float32(1) - s / t)) if i < steps - 1 else int(num_mask)
            full_conf = np.where(mask_index, conf_all, -np.inf)
            if n > 0:
                for r in range(b):
                    sel = np.argsort(-full_conf[r], kind="stable")[:n]
                    x[r, sel] = x0_all[r, sel]
        h = np.asarray(out.hidden, np.float64)[:, p:]
        phis.append(h.mean(1))
    return x[:, p:], np.stack(phis, 1)
