"""One batching path for every job that runs many prompts through a model (sampling, tracing,
calibration, prompt perplexity, the harm judge, Llama Guard):

1. each prompt is chat-templated and tokenized once (:meth:`Model.chat_ids`, or a judge's own
   template), giving unpadded token id lists;
2. :func:`plan_batches` sorts them by length into batches with a fixed row count per length
   bucket (few shapes, few compiles);
3. :func:`batch_inputs` left-pads one batch, once: to its length bucket, its row count (a
   short batch repeats its last prompt) and a multiple of a mesh's data axis
   (:func:`sri_jax.models.model.left_pad` is the one padding function);
4. the per-batch results, cut to their real rows, go back in the input order
   (:func:`input_order`, or written to their indices).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..models.model import left_pad

BUCKET_STEPS = ((256, 16), (1024, 128), (4096, 256))  # up to 256 tokens: multiples of 16; ...
# Prompt tokens per compiled call (rows x prompt bucket) above which batches get fewer rows:
# attention over long prompts (in-the-wild jailbreak templates run to ~1,500 tokens) then
# stays within a few GB of activations per layer.
MAX_BATCH_TOKENS = 32768


def bucket_length(n: int, limit: int) -> int:
    """Prompt length bucket: a multiple of 16 up to 256 tokens, of 128 up to 1024, of 256 up
    to 4096, then a power of two; capped at ``limit``. Few shapes (few compiles), little
    padding."""
    for top, step in BUCKET_STEPS:
        if n <= top:
            b = -(-n // step) * step
            break
    else:
        b = 1 << (n - 1).bit_length()
    return max(n, min(b, limit))


def plan_batches(lengths: Sequence[int], batch_size: int, limit: int,
                 max_tokens: int = MAX_BATCH_TOKENS) -> list[tuple[list[int], int]]:
    """Deterministic length-sorted batches (stable for equal lengths) as ``(indices, rows)``:
    each batch is run padded to ``rows`` rows, ``batch_size`` unless its prompt bucket is so
    long that ``rows x bucket > max_tokens`` (then fewer, at least 1). Full batches of one
    bucket share one row count, so they share one compiled program; a partial batch (the
    last one, or a set smaller than ``batch_size``) is padded only to the next power of two."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(np.asarray(lengths), kind="stable")

    def rows_for(j):  # rows allowed when order[j] is the batch's longest prompt
        return max(1, min(batch_size, max_tokens // bucket_length(int(lengths[order[j]]),
                                                                  limit)))

    out, i = [], 0
    while i < len(order):
        j = min(i + batch_size, len(order))
        while j - i > rows_for(j - 1):
            j = i + rows_for(j - 1)
        out.append((order[i:j].tolist(), min(rows_for(j - 1), 1 << (j - i - 1).bit_length())))
        i = j
    return out


def pad_id(model) -> int:
    """The id padding positions hold (masked out, so any id would do): the model's pad token,
    else 0."""
    return model.config.pad_token_id if model.config.pad_token_id is not None else 0


def batch_inputs(seqs: Sequence, pad: int, limit: int, rows: Optional[int] = None, *,
                 masks=None, mesh=None):
    """One batch as left-padded ``(ids, mask)`` int32 [R, bucket]: ``seqs`` (token id lists,
    or rows with their own ``masks``) padded to the length bucket of the longest
    (:func:`bucket_length` under ``limit``), to ``rows`` rows (default one per sequence; more
    repeat the last) and, under ``mesh``, to a multiple of its data axis. Strip results back
    to ``len(seqs)`` rows."""
    rows = len(seqs) if rows is None else rows
    if mesh is not None:
        from ..parallel.mesh import padded_batch

        rows = padded_batch(rows, mesh)
    length = bucket_length(max(len(s) for s in seqs), limit)
    return left_pad(seqs, pad, length, rows=rows, masks=masks)


def input_order(batches: Sequence[tuple[list[int], int]]) -> np.ndarray:
    """The permutation that puts rows concatenated batch by batch (each cut to its real rows)
    back in the input order."""
    return np.argsort(np.concatenate([idx for idx, _ in batches]), kind="stable")
