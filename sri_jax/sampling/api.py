"""``sri_jax.generate``: one fused sampler call per batch; batches planned, padded and put
back in order by :mod:`sri_jax.sampling.batching`."""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..data.attacks import MASK_SLOT
from ..models.config import ModelConfig
from ..models.model import Model
from ..sri.centers import check_compatible
from ..sri.signal import Centers
from .autoregressive import ar_sample
from .batching import batch_inputs, input_order, pad_id, plan_batches
from .common import Probe, Reads
from .config import SamplerConfig
from .diffusion import diffusion_sample
from .dream import dream_sample
from .fast_diffusion import check_fast, fast_diffusion_sample


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


@dataclasses.dataclass(frozen=True)
class Program:
    """The compile-time options of one sampler program, a hashable static argument (equal
    ones share the compiled program): the model and sampler configs, the layer read
    (None: the last), what is recorded, and the detector's scoring function."""

    mcfg: ModelConfig
    scfg: SamplerConfig
    reads: Reads = Reads()
    detector_fn: Optional[PureDetector] = None


@functools.partial(jax.jit, static_argnames=("program",))
def _sample(params, input_ids, attention_mask, key, probe, detector=(None, None), template=None,
            *, program: Program):
    """The whole sampler, SRI included, and the detector's verdict at the end of the trace:
    one XLA program. ``detector``: the detector's (params, threshold) arrays."""
    mcfg, scfg = program.mcfg, program.scfg
    kw = {} if template is None else {"template": template}
    if scfg.mode == "autoregressive":
        fn = ar_sample
    elif scfg.fast:
        fn = lambda *a, **kw: fast_diffusion_sample(*a, **kw)[:3]  # noqa: E731
    else:
        fn = dream_sample if mcfg.logits_shift else diffusion_sample
    tokens, sri, recs = fn(params, mcfg, scfg, input_ids, attention_mask, key, probe,
                           reads=program.reads, **kw)
    scores = None if program.detector_fn is None else program.detector_fn(detector[0], sri)
    flags = None if program.detector_fn is None else scores > detector[1]
    return tokens, sri, recs, scores, flags


def _check_mode(model: Model, cfg: SamplerConfig):
    if cfg.mode == "autoregressive" and not model.config.causal:
        raise ValueError(f"{model.name or 'this model'} is a diffusion model: use "
                         "mode='diffusion' or 'ar_on_diffusion'")
    if cfg.mode != "autoregressive" and model.config.causal:
        raise ValueError(f"{model.name or 'this model'} is autoregressive: use "
                         "SamplerConfig.autoregressive(gen_length=...) / mode='autoregressive'")
    if model.config.logits_shift and (cfg.mode != "diffusion" or (
            cfg.block_length != cfg.gen_length and not cfg.fast)):
        raise ValueError("Dream models sample one block (blocks only with cache/threshold "
                         "decoding): use mode='diffusion' with block_length == gen_length")
    check_fast(model.config, cfg)


def _inputs(model: Model, prompts, input_ids, attention_mask, system_prompt):
    """``(seqs, masks)``: each prompt's token ids (``masks`` None), or the rows of ``input_ids``
    with their mask rows."""
    if prompts is not None and input_ids is not None:
        raise ValueError("pass either prompts or input_ids, not both")
    if prompts is not None:
        if isinstance(prompts, str):
            prompts = [prompts]
        if len(prompts) == 0:
            raise ValueError("prompts is empty: pass at least one prompt")
        return model.chat_ids(prompts, system_prompt), None
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
    return list(ids.astype(np.int32)), list(mask.astype(np.int32))


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


def with_prefix(model: Model, cfg: SamplerConfig, seqs, masks, prefix, prefix_tokens):
    """``(seqs, texts)``: each row's real tokens followed by its forced response prefix (cut to
    ``prefix_tokens``), and the prefixes as decoded from the ids used (None without a
    tokenizer); ``(seqs, None)`` without ``prefix``."""
    if prefix is None:
        if prefix_tokens is not None:
            raise ValueError("prefix_tokens without prefix: pass the prefixes to cut")
        return seqs, None
    if cfg.cfg_scale > 0:
        raise ValueError("prefill with cfg_scale > 0 is not supported (the unconditional "
                         "pass would mask the prefix with the prompt); use cfg_scale 0")
    pids = prefix_ids(model, prefix, len(seqs), prefix_tokens)
    real = seqs if masks is None else [np.asarray(r)[np.asarray(m) == 1] for r, m in
                                       zip(seqs, masks)]
    out = [list(r) + list(p) for r, p in zip(real, pids)]
    return out, None if model.tokenizer is None else [model.tokenizer.decode(p) for p in pids]


@dataclasses.dataclass(frozen=True)
class Prompting:
    """How each prompt is put to the model: the system prompt ("default": the model's, None:
    none), and the response-side attacks, one entry per prompt. ``prefix`` (prefilling): a
    forced response start (text, token ids or None), cut to ``prefix_tokens`` tokens;
    ``template`` (masked infill, diffusion models): a response template (text with
    :data:`MASK_SLOT` markers or token ids, see :func:`template_ids`)."""

    system_prompt: Optional[str] = "default"
    prefix: Optional[Sequence] = None
    prefix_tokens: Optional[int] = None
    template: Optional[Sequence] = None


@dataclasses.dataclass(frozen=True)
class Readout:
    """What a run reads out besides tokens and SRI: ``activations`` the pooled phi
    [B, T, D] (for computing centers); ``snapshots`` the response tokens after every step
    [B, T, G]; ``direction`` a [D] vector: the projections phi . r_hat [B, T]."""

    activations: bool = False
    snapshots: bool = False
    direction: Optional[object] = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True)
class SamplerCall:
    """What a run fixes, and checks, once for all its batches: the compiled program's options,
    the probe (centers, direction) and the detector's arrays. Made by :func:`prepare`."""

    program: Program
    probe: Probe
    with_sri: bool
    detector: tuple = (None, None)  # the detector's (params, threshold)

    @property
    def cfg(self) -> SamplerConfig:
        return self.program.scfg


def prepare(model: Model, cfg: SamplerConfig, *, centers: Optional[Centers] = None,
            detector=None, readout: Readout = Readout(),
            system_prompt="default") -> SamplerCall:
    """Check the mode, the centers (against the model, sampler and system prompt), the
    direction and the detector once, and fix what every batch of the run shares."""
    _check_mode(model, cfg)
    mcfg = model.config
    probe = Probe()
    if centers is not None:
        check_compatible(centers, model, cfg, system_prompt=system_prompt)
        probe = probe._replace(**dict(zip(("mu_harmless", "mu_harmful"),
                                          centers.device_arrays())))
    if readout.direction is not None:
        r = np.asarray(readout.direction, np.float32)
        d = mcfg.hidden_size
        if r.shape != (d,) or not np.all(np.isfinite(r)) or not np.linalg.norm(r) > 0:
            raise ValueError(f"direction must be a finite non-zero [{d}] vector, got {r.shape}")
        probe = probe._replace(direction=jnp.asarray(r / np.linalg.norm(r)))
    fn, det = None, (None, None)
    if detector is not None:
        if centers is None:
            raise ValueError("a detector reads the SRI trace: pass the centers it was "
                             "trained against as centers=")
        detector.check_centers(centers, tau=cfg.tau)
        fn, params, thr = detector.as_pure()
        fn, det = PureDetector.wrap(fn), (params, thr)
    program = Program(mcfg, cfg, Reads(None if cfg.layer == "last" else
                                       mcfg.resolve_layer(cfg.layer),
                                       readout.activations, readout.snapshots), fn)
    return SamplerCall(program, probe, centers is not None, det)


def check_template(model: Model, cfg: SamplerConfig, template, rows: int) -> None:
    """Infill templates need the exact diffusion sampler and one valid entry per row."""
    if model.config.causal:
        raise ValueError("template (infill) needs a diffusion model; for an autoregressive "
                         "model pass its head as prefix= (sri_jax.data.attacks.infill_head)")
    if cfg.fast:
        raise ValueError("template (infill) runs with the exact diffusion sampler: leave out "
                         "the cache and the confidence threshold")
    template_ids(model, template, rows, cfg.gen_length)


def run_batch(model: Model, call: SamplerCall, seqs, *, rows: Optional[int] = None,
              masks=None, seed: int = 0, template=None) -> GenerationResult:
    """One fused sampler call over ``seqs`` (token id lists, or rows with their ``masks``),
    padded once (:func:`~sri_jax.sampling.batching.batch_inputs`: length bucket, ``rows``,
    mesh rows); the result holds ``len(seqs)`` rows. Under a mesh (params sharded by
    sri_jax.parallel) rows are sharded over the data axis, key and probe replicated."""
    from ..parallel.mesh import model_mesh, sampler_inputs, shard_rows, to_host

    mcfg, cfg = model.config, call.cfg
    limit = mcfg.max_position_embeddings - cfg.gen_length
    longest = max(len(s) for s in seqs)
    if longest > limit:
        raise ValueError(f"prompt of {longest} tokens + gen_length {cfg.gen_length} "
                         f"exceeds the model's context {mcfg.max_position_embeddings}; "
                         "shorten the prompt or lower gen_length")
    mesh, n = model_mesh(model.params), len(seqs)
    ids, mask = batch_inputs(seqs, pad_id(model), limit, rows, masks=masks, mesh=mesh)
    canvas = None
    if template is not None:  # the response canvas, rows padded as the prompts are
        canvas = template_ids(model, template, n, cfg.gen_length)
        canvas = np.concatenate([canvas, np.repeat(canvas[-1:], ids.shape[0] - n, axis=0)])
    probe = call.probe
    if mesh is not None:
        ids, mask, key, probe = sampler_inputs(mesh, ids, mask, seed, probe)
        canvas = None if canvas is None else shard_rows(mesh, canvas)
    else:
        ids, mask, key = jnp.asarray(ids), jnp.asarray(mask), jax.random.key(seed)
        canvas = None if canvas is None else jnp.asarray(canvas)
    tokens, sri, recs, scores, flags = _sample(model.params, ids, mask, key, probe,
                                               call.detector, canvas, program=call.program)

    def host(a):
        return None if a is None else to_host(a)[:n]

    tokens = host(tokens)
    return GenerationResult(
        tokens=tokens, texts=model.decode(tokens) if model.tokenizer is not None else None,
        sri=host(sri) if call.with_sri else None, activations=host(recs.phi),
        projections=host(recs.projection), snapshots=host(recs.snapshot),
        detector_scores=host(scores), flagged=host(flags),
        templates=None if template is None else list(template))


def generate(model: Model, prompts: Optional[Sequence[str]] = None,
             cfg: SamplerConfig = SamplerConfig(), *, input_ids=None, attention_mask=None,
             centers: Optional[Centers] = None, detector=None, seed: int = 0,
             readout: Readout = Readout(),
             prompting: Prompting = Prompting()) -> GenerationResult:
    """Sample a batch in one fused XLA program and read the SRI signal on the way.

    ``prompts`` are chat-templated with the model's template (system prompt "You are a
    helpful assistant" by default, ``prompting.system_prompt``); ``input_ids`` /
    ``attention_mask`` (left-padded) are used as given. With ``centers`` the result carries
    ``sri`` [B, T]; ``readout`` (:class:`Readout`) adds the pooled phi [B, T, D] (for
    computing centers), per-step snapshots or projections. With a fitted ``detector``
    (``SRIGuard`` / ``SRIClassifier``, trained against these centers) its score and flag per
    row are computed inside the same compiled program.

    ``prompting.prefix`` (prefilling attack): one forced response start per prompt (text,
    token ids or None), cut to ``prompting.prefix_tokens`` tokens. Its tokens go right after
    the generation prompt: on the prompt side of the AR cache, and at the start of the
    response in a diffusion canvas, where the sampler never touches them (as prompt tokens).
    The sampler then generates ``gen_length`` tokens after it in ``steps`` steps, and the SRI
    pools only those (the prefix is not a step).

    ``prompting.template`` (masked-infill attack, diffusion models): one response template
    per prompt (see :func:`template_ids`) laid into the response canvas; its tokens are never
    remasked, the sampler fills its mask slots (and any positions after it) and the SRI pools
    only those generated positions. The AR analogue is ``prefix`` = the template's head.
    """
    pr = prompting
    call = prepare(model, cfg, centers=centers, detector=detector, readout=readout,
                   system_prompt=pr.system_prompt)
    seqs, masks = _inputs(model, prompts, input_ids, attention_mask, pr.system_prompt)
    seqs, used = with_prefix(model, cfg, seqs, masks, pr.prefix, pr.prefix_tokens)
    if pr.template is not None:
        check_template(model, cfg, pr.template, len(seqs))
    res = run_batch(model, call, seqs, masks=None if pr.prefix is not None else masks,
                    seed=seed, template=pr.template)
    res.prefixes = used
    return res


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


def generate_batched(model: Model, prompts: Optional[Sequence[str]], cfg: SamplerConfig, *,
                     token_ids: Optional[Sequence[Sequence[int]]] = None,
                     prompting: Prompting = Prompting(), batch_size: int = 16, seed: int = 0,
                     progress: bool = True, desc: str = "generate",
                     **kwargs) -> GenerationResult:
    """:func:`generate` over many prompts: each encoded once, sorted by length into batches
    of ``batch_size`` (fewer rows for very long prompts, :func:`plan_batches`; a short batch
    is padded by repetition, so every call reuses the compiled program of its bucket), the
    centers and detector checked once, results in the input order. Batch i uses ``seed + i``.
    ``prompting``: as in :func:`generate` (prefixes / templates one per prompt).
    ``token_ids`` (instead of prompts): each row's prompt ids, already templated.
    ``kwargs``: :func:`prepare`'s options (centers, detector, readout)."""
    from tqdm.auto import tqdm

    pr = prompting
    call = prepare(model, cfg, system_prompt=pr.system_prompt, **kwargs)
    if (prompts is None) == (token_ids is None):
        raise ValueError("pass either prompts or token_ids")
    seqs = [list(t) for t in token_ids] if prompts is None else list(prompts)
    if not seqs:
        raise ValueError("prompts is empty: pass at least one prompt")
    if pr.template is not None:
        check_template(model, call.cfg, pr.template, len(seqs))
    if prompts is not None:
        seqs = model.chat_ids(seqs, pr.system_prompt)
    batches = plan_batches([len(s) for s in seqs], batch_size,
                           model.config.max_position_embeddings - cfg.gen_length)
    seqs, used = with_prefix(model, cfg, seqs, None, pr.prefix, pr.prefix_tokens)
    parts = []
    with tqdm(total=len(seqs), desc=desc, unit="prompt", disable=not progress) as bar:
        for i, (idx, rows) in enumerate(batches):
            tpl = None if pr.template is None else [pr.template[j] for j in idx]
            parts.append(run_batch(model, call, [seqs[j] for j in idx], rows=rows,
                                   seed=seed + i, template=tpl))
            bar.update(len(idx))
    res = _select(_stack(parts), input_order(batches))
    res.prefixes = used
    return res
