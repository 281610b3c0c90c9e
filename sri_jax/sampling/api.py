"""``sri_jax.generate``: chat-template, bucket, and run one fused sampler call per batch."""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..data.attacks import MASK_SLOT
from ..models.model import Model, left_pad
from ..sri.centers import check_compatible
from ..sri.signal import Centers
from .autoregressive import ar_sample
from .common import Probe
from .config import SamplerConfig
from .diffusion import diffusion_sample
from .dream import dream_sample

BUCKET_STEPS = ((256, 16), (1024, 128), (4096, 256))  # up to 256 tokens: multiples of 16; ...
# Prompt tokens per compiled call (rows x prompt bucket) above which batches get fewer rows:
# attention over long prompts (in-the-wild jailbreak templates run to ~1,500 tokens) then
# stays within a few GB of activations per layer.
MAX_BATCH_TOKENS = 32768


@dataclasses.dataclass
class GenerationResult:
    """tokens [B, G]; texts (when the model has a tokenizer: each whole row decoded with
    special tokens skipped, the text the refusal judge reads, as in the reference;
    ``model.decode(tokens, stop_at_eos=True)`` gives the answer up to its EOS); sri [B, T] when centers were
    given; activations [B, T, D] pooled phi when requested; projections [B, T] when a
    direction was given; snapshots [B, T, G] response tokens after each step when requested;
    detector_scores [B] and flagged [B] bool when a detector was given; prefixes (prefill:
    each row's forced response start as decoded from the ids used; ``tokens`` and ``texts``
    hold only what was generated after it); templates (infill: each row's response template
    as given; ``tokens`` / ``texts`` are the whole response, template tokens included)."""

    tokens: np.ndarray
    texts: Optional[list] = None
    sri: Optional[np.ndarray] = None
    activations: Optional[np.ndarray] = None
    projections: Optional[np.ndarray] = None
    snapshots: Optional[np.ndarray] = None
    detector_scores: Optional[np.ndarray] = None
    flagged: Optional[np.ndarray] = None
    prefixes: Optional[list] = None
    templates: Optional[list] = None


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


@dataclasses.dataclass(frozen=True)
class PureDetector:
    """A detector's scoring function as a hashable static argument (equal detectors of the
    same kind share one compiled sampler)."""

    func: object
    keywords: tuple

    @classmethod
    def wrap(cls, fn):
        if isinstance(fn, functools.partial):
            return cls(fn.func, tuple(sorted(fn.keywords.items())))
        return cls(fn, ())

    def __call__(self, params, traces):
        return self.func(params, traces, **dict(self.keywords))


@functools.partial(jax.jit, static_argnames=("mcfg", "scfg", "hidden_layer",
                                             "return_activations", "record_snapshots",
                                             "detector_fn"))
def _sample(params, input_ids, attention_mask, key, probe, detector_params=None,
            detector_threshold=None, template=None, *, mcfg, scfg, hidden_layer,
            return_activations, record_snapshots, detector_fn=None):
    """The whole sampler, SRI included, and the detector's verdict at the end of the trace:
    one XLA program."""
    kw = {} if template is None else {"template": template}
    if scfg.mode == "autoregressive":
        fn = ar_sample
    else:
        fn = dream_sample if mcfg.logits_shift else diffusion_sample
    tokens, sri, recs = fn(params, mcfg, scfg, input_ids, attention_mask, key, probe,
                           hidden_layer=hidden_layer, return_activations=return_activations,
                           record_snapshots=record_snapshots, **kw)
    scores = None if detector_fn is None else detector_fn(detector_params, sri)
    flags = None if detector_fn is None else scores > detector_threshold
    return tokens, sri, recs, scores, flags


def _check_mode(model: Model, cfg: SamplerConfig):
    if cfg.mode == "autoregressive" and not model.config.causal:
        raise ValueError(f"{model.name or 'this model'} is a diffusion model: use "
                         "mode='diffusion' or 'ar_on_diffusion'")
    if cfg.mode != "autoregressive" and model.config.causal:
        raise ValueError(f"{model.name or 'this model'} is autoregressive: use "
                         "SamplerConfig.autoregressive(gen_length=...) / mode='autoregressive'")
    if model.config.logits_shift and (cfg.mode != "diffusion"
                                      or cfg.block_length != cfg.gen_length):
        raise ValueError("Dream models sample one block: use mode='diffusion' with "
                         "block_length == gen_length (and dream_alg to pick positions)")


def _inputs(model: Model, prompts, input_ids, attention_mask, system_prompt):
    if prompts is not None and input_ids is not None:
        raise ValueError("pass either prompts or input_ids, not both")
    if prompts is not None:
        if isinstance(prompts, str):
            prompts = [prompts]
        if len(prompts) == 0:
            raise ValueError("prompts is empty: pass at least one prompt")
        return model.encode_chat(prompts, system_prompt)
    if input_ids is None:
        raise ValueError("pass prompts (a list of strings) or input_ids")
    ids = np.asarray(input_ids)
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"input_ids must be a non-empty [batch, length] array, got {ids.shape}")
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask {mask.shape} does not match input_ids {ids.shape}")
    if (mask.sum(1) == 0).any():
        raise ValueError("a row of attention_mask has no real token")
    return ids.astype(np.int32), mask.astype(np.int32)


def prefix_ids(model: Model, prefix, rows: int, max_tokens: Optional[int] = None) -> list:
    """Each row's forced response prefix as token ids: a string is tokenized as plain text
    (no special tokens, control text stays text), a sequence of ints is taken as ids; then
    cut to its first ``max_tokens``. ``None`` or "" gives an empty prefix."""
    if isinstance(prefix, str) or len(prefix) != rows:
        raise ValueError(f"prefix must be a list with one entry (str, token ids or None) per "
                         f"prompt: {rows} prompts, got "
                         f"{'a single str' if isinstance(prefix, str) else len(prefix)}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"prefix_tokens must be >= 1, got {max_tokens}")
    out = []
    for i, p in enumerate(prefix):
        if p is None or isinstance(p, str):
            if p and model.tokenizer is None:
                raise ValueError(f"prefix {i} is text but {model.name or 'the model'} has no "
                                 "tokenizer: pass token ids")
            ids = model._tokens(p, split_special_tokens=True) if p else []
        else:
            ids = [int(t) for t in p]
            if any(not 0 <= t < model.config.vocab_size for t in ids):
                raise ValueError(f"prefix {i} holds ids outside the vocabulary "
                                 f"[0, {model.config.vocab_size})")
        out.append(ids[:max_tokens])
    return out


def template_ids(model: Model, template, rows: int, gen_length: int) -> np.ndarray:
    """Each row's infill response template as a [rows, gen_length] canvas: a string's text
    between :data:`MASK_SLOT` markers is tokenized as plain text and each marker becomes one
    mask id; a sequence of ints is taken as ids (the mask id marks generated positions).
    Positions after the template up to ``gen_length`` are generated too."""
    if isinstance(template, str) or len(template) != rows:
        raise ValueError(f"template must be a list with one entry (str or token ids) per "
                         f"prompt: {rows} prompts, got "
                         f"{'a single str' if isinstance(template, str) else len(template)}")
    mask_id = model.config.mask_token_id
    out = np.full((rows, gen_length), mask_id, np.int32)
    for i, t in enumerate(template):
        if isinstance(t, str):
            if model.tokenizer is None:
                raise ValueError(f"template {i} is text but {model.name or 'the model'} has "
                                 "no tokenizer: pass token ids")
            ids = []
            for k, piece in enumerate(t.split(MASK_SLOT)):
                ids += ([mask_id] if k else []) + (
                    model._tokens(piece, split_special_tokens=True) if piece else [])
        else:
            ids = [int(x) for x in t]
            if any(not 0 <= x < model.config.vocab_size for x in ids):
                raise ValueError(f"template {i} holds ids outside the vocabulary "
                                 f"[0, {model.config.vocab_size})")
        if len(ids) > gen_length or (len(ids) == gen_length and mask_id not in ids):
            raise ValueError(f"template {i} is {len(ids)} tokens and leaves nothing to "
                             f"generate in gen_length {gen_length}: raise gen_length or "
                             "shorten the template")
        out[i, :len(ids)] = ids
    return out


def append_prefix(ids, mask, prefixes, pad_id):
    """Each row's real tokens followed by its prefix ids, left-padded again: the prefix sits
    right after the generation prompt, where the response starts."""
    rows = [np.asarray(r)[np.asarray(m) == 1].tolist() + list(p)
            for r, m, p in zip(ids, mask, prefixes)]
    return left_pad(rows, pad_id)


def _left_pad(ids, mask, length, pad_id):
    b, l = ids.shape
    if l == length:
        return ids, mask
    out_ids = np.full((b, length), pad_id, np.int32)
    out_mask = np.zeros((b, length), np.int32)
    out_ids[:, length - l:] = ids
    out_mask[:, length - l:] = mask
    return out_ids, out_mask


def generate(model: Model, prompts: Optional[Sequence[str]] = None,
             cfg: SamplerConfig = SamplerConfig(), *, input_ids=None, attention_mask=None,
             centers: Optional[Centers] = None, return_activations: bool = False,
             direction=None, record_snapshots: bool = False, seed: int = 0,
             system_prompt: Optional[str] = "default", detector=None, prefix=None,
             prefix_tokens: Optional[int] = None, template=None) -> GenerationResult:
    """Sample a batch in one fused XLA program and read the SRI signal on the way.

    ``prompts`` are chat-templated with the model's template (system prompt "You are a
    helpful assistant" by default); ``input_ids`` / ``attention_mask`` (left-padded) are used
    as given. With ``centers`` the result carries ``sri`` [B, T]; with
    ``return_activations`` the pooled phi [B, T, D] (for computing centers). With a fitted
    ``detector`` (``SRIGuard`` / ``SRIClassifier``, trained against these centers) its score
    and flag per row are computed inside the same compiled program.

    ``prefix`` (prefilling attack): one forced response start per prompt (text, token ids or
    None), cut to ``prefix_tokens`` tokens. Its tokens go right after the generation prompt:
    on the prompt side of the AR cache, and at the start of the response in a diffusion
    canvas, where the sampler never touches them (as prompt tokens). The sampler then
    generates ``gen_length`` tokens after it in ``steps`` steps, and the SRI pools only those
    (the prefix is not a step).

    ``template`` (masked-infill attack, diffusion models): one response template per prompt
    (see :func:`template_ids`) laid into the response canvas; its tokens are never remasked,
    the sampler fills its mask slots (and any positions after it) and the SRI pools only
    those generated positions. The AR analogue is ``prefix`` = the template's head.
    """
    _check_mode(model, cfg)
    if template is not None and model.config.causal:
        raise ValueError("template (infill) needs a diffusion model; for an autoregressive "
                         "model pass its head as prefix= (sri_jax.data.attacks.infill_head)")
    ids, mask = _inputs(model, prompts, input_ids, attention_mask, system_prompt)
    mcfg = model.config
    pad_id = mcfg.pad_token_id if mcfg.pad_token_id is not None else 0
    used = None
    if prefix is not None:
        if cfg.cfg_scale > 0:
            raise ValueError("prefill with cfg_scale > 0 is not supported (the unconditional "
                             "pass would mask the prefix with the prompt); use cfg_scale 0")
        pids = prefix_ids(model, prefix, ids.shape[0], prefix_tokens)
        ids, mask = append_prefix(ids, mask, pids, pad_id)
        used = None if model.tokenizer is None else [model.tokenizer.decode(p) for p in pids]
    elif prefix_tokens is not None:
        raise ValueError("prefix_tokens without prefix: pass the prefixes to cut")
    canvas = None
    if template is not None:
        canvas = template_ids(model, template, ids.shape[0], cfg.gen_length)
    limit = mcfg.max_position_embeddings - cfg.gen_length
    if ids.shape[1] > limit:
        raise ValueError(f"prompt of {ids.shape[1]} tokens + gen_length {cfg.gen_length} "
                         f"exceeds the model's context {mcfg.max_position_embeddings}; "
                         "shorten the prompt or lower gen_length")
    ids, mask = _left_pad(ids, mask, bucket_length(ids.shape[1], limit), pad_id)

    d = mcfg.hidden_size
    probe = Probe()
    if centers is not None:
        check_compatible(centers, model, cfg, system_prompt=system_prompt)
        probe = probe._replace(**dict(zip(("mu_harmless", "mu_harmful"),
                                          centers.device_arrays())))
    if direction is not None:
        r = np.asarray(direction, np.float32)
        if r.shape != (d,) or not np.all(np.isfinite(r)) or not np.linalg.norm(r) > 0:
            raise ValueError(f"direction must be a finite non-zero [{d}] vector, got {r.shape}")
        probe = probe._replace(direction=jnp.asarray(r / np.linalg.norm(r)))
    hidden_layer = None if cfg.layer == "last" else mcfg.resolve_layer(cfg.layer)
    det_fn = det_params = det_thr = None
    if detector is not None:
        if centers is None:
            raise ValueError("a detector reads the SRI trace: pass the centers it was "
                             "trained against as centers=")
        detector.check_centers(centers, tau=cfg.tau)
        fn, det_params, det_thr = detector.as_pure()
        det_fn = PureDetector.wrap(fn)

    # Under a mesh (params sharded by sri_jax.parallel): rows padded to a multiple of the
    # data axis and sharded over it, key/probe replicated; padding stripped from the results.
    from ..parallel.mesh import model_mesh, sampler_inputs, shard_rows, to_host

    mesh, rows = model_mesh(model.params), ids.shape[0]
    if mesh is not None:
        ids, mask, key, probe = sampler_inputs(mesh, ids, mask, seed, probe)
        canvas = None if canvas is None else shard_rows(mesh, canvas)
    else:
        ids, mask, key = jnp.asarray(ids), jnp.asarray(mask), jax.random.key(seed)
        canvas = None if canvas is None else jnp.asarray(canvas)
    tokens, sri, recs, scores, flags = _sample(
        model.params, ids, mask, key, probe, det_params, det_thr, canvas, mcfg=mcfg, scfg=cfg,
        hidden_layer=hidden_layer, return_activations=return_activations,
        record_snapshots=record_snapshots, detector_fn=det_fn)

    def host(a):
        return None if a is None else to_host(a)[:rows]

    tokens = host(tokens)

    return GenerationResult(
        tokens=tokens,
        texts=model.decode(tokens) if model.tokenizer is not None else None,
        sri=host(sri) if centers is not None else None,
        activations=host(recs.phi),
        projections=host(recs.projection),
        snapshots=host(recs.snapshot), detector_scores=host(scores), flagged=host(flags),
        prefixes=used, templates=None if template is None else list(template))



def _select(res: GenerationResult, idx) -> GenerationResult:
    """Rows ``idx`` of every field that is present."""
    out = {}
    for f in dataclasses.fields(res):
        a = getattr(res, f.name)
        out[f.name] = None if a is None else (
            [a[k] for k in idx] if isinstance(a, list) else np.asarray(a)[idx])
    return GenerationResult(**out)


def _stack(parts) -> GenerationResult:
    out = {}
    for f in dataclasses.fields(GenerationResult):
        vals = [getattr(p, f.name) for p in parts]
        out[f.name] = None if vals[0] is None else (
            [x for v in vals for x in v] if isinstance(vals[0], list) else np.concatenate(vals))
    return GenerationResult(**out)


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


def generate_batched(model: Model, prompts: Sequence[str], cfg: SamplerConfig, *,
                     batch_size: int = 16, seed: int = 0, progress: bool = True,
                     desc: str = "generate", prefix=None, template=None,
                     **kwargs) -> GenerationResult:
    """:func:`generate` over many prompts: sorted by length into batches of ``batch_size``
    (fewer rows for very long prompts, :func:`plan_batches`; a short batch is padded by
    repetition, so every call reuses the compiled program of its bucket), results in the
    input order. Batch i uses ``seed + i``. ``prefix`` / ``template``: one per prompt (see
    :func:`generate`)."""
    from tqdm.auto import tqdm

    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: pass at least one prompt")
    if prefix is not None:
        prefix_ids(model, prefix, len(prompts))  # fail before any batch runs
    if template is not None:
        template_ids(model, template, len(prompts), cfg.gen_length)
    system_prompt = kwargs.get("system_prompt", "default")
    lengths = [model.encode_chat([p], system_prompt)[0].shape[1] for p in prompts]
    batches = plan_batches(lengths, batch_size,
                           model.config.max_position_embeddings - cfg.gen_length)
    parts = []
    with tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not progress) as bar:
        for i, (idx, rows) in enumerate(batches):
            batch = [prompts[j] for j in idx]
            batch += [batch[-1]] * (rows - len(batch))
            pre, tpl = (None if x is None else [x[j] for j in idx] + [x[idx[-1]]] * (rows - len(idx))
                        for x in (prefix, template))
            res = generate(model, batch, cfg, seed=seed + i, prefix=pre, template=tpl, **kwargs)
            parts.append(_select(res, np.arange(len(idx))))
            bar.update(len(idx))
    order = np.concatenate([idx for idx, _ in batches])
    return _select(_stack(parts), np.argsort(order, kind="stable"))
