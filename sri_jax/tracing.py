"""Tracing prompt sets to disk: SRI trajectories as sharded Parquet files, resumable.

A trace run writes into one directory::

    .lock                held (fcntl.flock) by the trace process writing the folder; holds its pid
    plan.json            what is being traced (prompt ids hash, batch size, sampler config,
                         model and centers fingerprints, shard and record counts)
    shard-00000.parquet  one batch of records each, written to a temporary file and renamed,
    shard-00001.parquet  so a shard on disk is always complete; its Parquet metadata holds
    ...                  the plan's hash (key "sri_jax.plan")

    manifest.json        written once every shard is complete (shard list, record count)

Rerunning the same command skips the shards already on disk that check out (a readable
Parquet footer, the planned row count, this plan's hash), so an interrupted run resumes
without duplicating or losing records; a shard that does not check out is moved aside to
``.shard-NNNNN.parquet.bad`` with a warning and redone. A different plan in the same
directory is an error. A second trace process on the same local folder fails at once (the
lock is taken before the plan is read or written; object-store URLs are not locked).
Multi-host (``jax.distributed``): shard i is written by process ``i % process_count``; the
processes agree on which shards exist before starting, so a restarted job skips them; process
0 holds the lock. The folder may be a ``gs://`` (or other fsspec) URL.
Columns: prompt_id, set, attack, prompt, response, tokens, sri, refused; prefix in prefilled
runs (the forced response start; response and tokens are what was generated after it);
template in infill runs (the response template; response and tokens include its tokens); and,
when requested, activations [T*D] float32 and snapshots [T*G] int32, both row-major. pandas
and polars read the directory directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .sampling.api import Prompting, Readout

PLAN = "plan.json"
MANIFEST = "manifest.json"
LOCK = ".lock"
PLAN_KEY = b"sri_jax.plan"  # Parquet key-value metadata: the hash of the plan a shard belongs to


class FolderInUseError(OSError):
    """Another process holds the run folder's lock."""


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class TraceOptions:
    """How a trace run is labelled, batched and stored. ``set_name`` / ``attack``: the
    records' labels; ``batch_size``; ``seed``: batch i samples with ``seed + i``;
    ``save_activations``: the pooled phi [T, D] per record; ``save_snapshots``: the response
    tokens after every step [T, G] (``GenerationResult.snapshots``); ``progress``: a progress
    bar; ``shard_filter(i)``: which shards this process writes (multi-host tracing; default:
    one process writes every shard, with several processes (``jax.distributed``) process p
    writes shards i with ``i % count == p``)."""

    set_name: str = "prompts"
    attack: str = "none"
    batch_size: int = 16
    seed: int = 0
    save_activations: bool = False
    save_snapshots: bool = False
    progress: bool = True
    shard_filter: Optional[Callable[[int], bool]] = None


@dataclasses.dataclass
class _Run:
    """A trace run's inputs, checked and encoded once, before anything runs: the prompts and
    their ids, each prompt's token ids (prefix appended), the batch plan, the prefixes as
    given and as decoded (prefill), the templates (infill), the sampler call and the judge."""

    prompts: list
    ids: list
    seqs: list
    batches: list
    prefix: Optional[list]
    prefixes: Optional[list]
    template: Optional[list]
    call: object
    judge: Callable[[str], bool]


def trace(model, prompts: Sequence[str], cfg, *, centers, out_dir,
          ids: Optional[Sequence[str]] = None, judge: Optional[Callable[[str], bool]] = None,
          prompting: Prompting = Prompting(), options: TraceOptions = TraceOptions()) -> Path:
    """Generate, read SRI, judge refusals and write records under ``out_dir``. Returns the dir.

    ``options`` (:class:`TraceOptions`): labels, batch size, seed, what else each record
    stores, which shards this process writes; the plan is the same on every process. When
    the model is sharded over devices of several processes (SPMD) every process takes part in
    every batch and only the writer stores it; otherwise each process generates its own.

    ``prompting`` (:class:`~sri_jax.sampling.api.Prompting`): the system prompt, and
    ``prefix`` / ``prefix_tokens``: the prefilling attack (one forced response start per
    prompt, see :func:`sri_jax.sampling.generate`); the records store the prefix used and
    judge only the generated continuation. ``template``: the masked-infill attack (diffusion
    models; one response template per prompt), stored in the records.
    """
    from .parallel import multihost as mh
    from .parallel.storage import TraceStore

    run = _encode(model, prompts, cfg, centers, ids, judge, prompting, options)
    store = TraceStore(out_dir)
    store.mkdir()
    with run_lock(store) if mh.process_index() == 0 else contextlib.nullcontext():
        plan = _plan(model, cfg, centers, run, prompting, options)
        _claim_plan(store, plan)

        n_proc, me = mh.process_count(), mh.process_index()
        spmd = mh.spans_processes(model.params)  # every process joins every sampler call
        writes = options.shard_filter or (lambda i: mh.shard_owner(i, n_proc) == me)
        plan_hash = _hash(plan)
        done = mh.any_across_processes(_done_shards(store, run.batches, plan_hash))
        todo = [i for i in range(len(run.batches)) if not done[i] and (spmd or writes(i))]
        _write_shards(model, run, todo, writes, store, plan_hash, options)

        done = mh.any_across_processes(_done_shards(store, run.batches, plan_hash))
        if done.all() and me == 0 and not store.exists(MANIFEST):
            manifest = {"plan": plan_hash, "set": options.set_name, "attack": options.attack,
                        "records": len(run.prompts), "num_shards": len(run.batches),
                        "shards": [{"file": shard_name(i), "rows": len(b)}
                                   for i, (b, _) in enumerate(run.batches)],
                        "num_processes": n_proc, "spmd": spmd,
                        "completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            store.write_bytes(MANIFEST, json.dumps(manifest, indent=2).encode())
        mh.barrier("sri_jax.trace.done")
        return store.handle()


def _encode(model, prompts, cfg, centers, ids, judge, pr: Prompting, o: TraceOptions) -> _Run:
    """Check and encode a run's inputs once: ids, centers, prompts, prefixes, templates."""
    from .judges.keyword import is_refusal
    from .sampling.api import check_template, prepare, with_prefix
    from .sampling.batching import plan_batches

    prompts = list(prompts)
    if not prompts:
        raise ValueError(f"prompt set {o.set_name!r} is empty: nothing to trace")
    ids = [str(i) for i in (ids if ids is not None else range(len(prompts)))]
    if len(ids) != len(prompts) or len(set(ids)) != len(ids):
        raise ValueError("ids must be unique and one per prompt")
    prefix = None if pr.prefix is None else list(pr.prefix)
    call = prepare(model, cfg, centers=centers,
                   readout=Readout(o.save_activations, o.save_snapshots),
                   system_prompt=pr.system_prompt)
    seqs = model.chat_ids(prompts, pr.system_prompt)
    batches = plan_batches([len(q) for q in seqs], o.batch_size,
                           model.config.max_position_embeddings - cfg.gen_length)
    seqs, prefixes = with_prefix(model, cfg, seqs, None, prefix, pr.prefix_tokens)
    template = None if pr.template is None else list(pr.template)
    if template is not None:
        check_template(model, cfg, template, len(prompts))
    return _Run(prompts, ids, seqs, batches, prefix, prefixes, template, call,
                judge or is_refusal)


def _plan(model, cfg, centers, run: _Run, pr: Prompting, o: TraceOptions) -> dict:
    """What is being traced (``plan.json``; its hash marks every shard)."""
    plan = {"ids": _hash(run.ids), "prompts": _hash(run.prompts), "batch_size": o.batch_size,
            "sampler": cfg.to_dict(), "model": model.name, "weight_hash": model.weight_hash,
            "centers": _centers_hash(centers),
            "set": o.set_name, "attack": o.attack, "seed": o.seed, "shards": len(run.batches),
            "save_activations": o.save_activations, "records": len(run.prompts)}
    if o.save_snapshots:  # only when set, so plans written before this option still match
        plan["save_snapshots"] = True
    if run.prefix is not None:
        plan["prefix"] = _hash([p if p is None or isinstance(p, str) else list(map(int, p))
                                for p in run.prefix])
        plan["prefix_tokens"] = pr.prefix_tokens
    if run.template is not None:
        plan["template"] = _hash([t if isinstance(t, str) else list(map(int, t))
                                  for t in run.template])
    return plan


def _write_shards(model, run: _Run, todo, writes, store, plan_hash: str,
                  o: TraceOptions) -> None:
    """Generate the batches ``todo`` and write those this process owns (``writes(i)``) as
    shards marked with ``plan_hash``."""
    from tqdm.auto import tqdm

    from .parallel import multihost as mh
    from .sampling.api import run_batch

    n_todo = sum(len(run.batches[i][0]) for i in todo)
    t0 = time.perf_counter()
    with tqdm(total=n_todo, desc=f"trace {o.set_name}/{o.attack}", unit="prompt",
              disable=not o.progress or mh.process_index() != 0) as bar:
        for i in todo:
            idx, rows = run.batches[i]
            res = run_batch(model, run.call, [run.seqs[j] for j in idx], rows=rows,
                            seed=o.seed + i, template=None if run.template is None
                            else [run.template[j] for j in idx])
            n = len(idx)
            if not writes(i):  # SPMD: another process stores this batch
                bar.update(n)
                continue
            head = {"prompt_id": [run.ids[j] for j in idx], "set": [o.set_name] * n,
                    "attack": [o.attack] * n, "prompt": [run.prompts[j] for j in idx]}
            table = _records(res, head, run.judge, run.call.program,
                             None if run.prefix is None else [run.prefixes[j] for j in idx])
            store.write_parquet(shard_name(i), table.replace_schema_metadata(
                {PLAN_KEY: plan_hash.encode()}))
            bar.update(n)
            bar.set_postfix(prompts_per_s=f"{bar.n / (time.perf_counter() - t0):.2f}")


def _centers_hash(centers) -> str:
    from .sri.centers import centers_fingerprint

    return _hash({"meta": dict(centers.meta), "arrays": centers_fingerprint(centers)})


def _claim_plan(store, plan: dict) -> None:
    """Write the plan into a new folder, or check it against the one there (on every
    process, before any runs)."""
    from .parallel import multihost as mh

    diff = []
    if store.exists(PLAN):
        old = json.loads(store.read_text(PLAN))
        old.setdefault("records", plan["records"])  # plans written before it was recorded
        diff = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
    else:
        store.write_bytes(PLAN, json.dumps(plan, indent=2, sort_keys=True).encode())
    if not mh.all_across_processes([not diff])[0]:
        raise ValueError(f"{store.display} already holds a different trace run (differs in "
                         f"{diff or 'the folder of another process'}); use a new output "
                         "directory or delete the old one")


def _records(res, head: dict, judge, program, prefixes):
    """One shard's table: ``head`` columns, then the generation, its SRI and judged refusal,
    and (when used or requested) prefixes, activations and snapshots."""
    import pyarrow as pa

    cols = {**head, "response": res.texts,
            "tokens": pa.array([r.tolist() for r in res.tokens], pa.list_(pa.int32())),
            "sri": pa.array([r.tolist() for r in res.sri], pa.list_(pa.float32())),
            "refused": [bool(judge(t)) for t in res.texts]}
    if prefixes is not None:
        cols["prefix"] = prefixes
    if res.templates is not None:
        cols["template"] = [t if isinstance(t, str) else json.dumps(list(map(int, t)))
                            for t in res.templates]
    if program.reads.activations:
        cols["activations"] = pa.array([r.reshape(-1).tolist() for r in res.activations],
                                       pa.list_(pa.float32()))
    if program.reads.snapshots:
        cols["snapshots"] = pa.array([r.reshape(-1).tolist() for r in res.snapshots],
                                     pa.list_(pa.int32()))
    return pa.table(cols)


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.parquet"


@contextlib.contextmanager
def run_lock(out_dir):
    """Hold the run folder's lock (``.lock`` inside it, ``fcntl.flock``, non-blocking) for the
    block: another holder raises :class:`FolderInUseError` at once, naming its pid. The lock
    ends with the process, however it ends. URLs (object stores) are not locked."""
    import fcntl

    from .parallel.storage import TraceStore

    store = out_dir if isinstance(out_dir, TraceStore) else TraceStore(out_dir)
    if store.url:
        yield
        return
    store.mkdir()
    fd = os.open(store.path(LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FolderInUseError(f"{store.display} is in use by another trace process (pid "
                                   f"{pid}); wait for it to finish, or trace into another "
                                   "folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _shard_problem(store, name: str, rows: int, plan_hash: str):
    """Why shard ``name`` is not a finished shard of this plan, or None when it is."""
    import pyarrow as pa

    try:
        meta = store.parquet_metadata(name)
    except (pa.ArrowException, OSError, ValueError) as e:
        return f"is not a complete Parquet file ({e})"
    if meta.num_rows != rows:
        return f"holds {meta.num_rows} records where the plan has {rows}"
    written_for = (meta.metadata or {}).get(PLAN_KEY)
    if written_for is not None and written_for.decode() != plan_hash:
        return "belongs to another trace plan"
    return None  # shards written before plan hashes were recorded: footer and rows only


def _done_shards(store, batches, plan_hash: str) -> np.ndarray:
    """Which shards are finished: on disk (one listing, also on object stores) with a
    readable footer, the planned row count and this plan's hash. A shard that fails is moved
    aside to ``.<name>.bad`` (replacing an older one) with a warning, to be redone."""
    names = set(store.list("shard-*.parquet"))
    done = np.zeros(len(batches), bool)
    for i, (idx, _) in enumerate(batches):
        name = shard_name(i)
        if name not in names:
            continue
        problem = _shard_problem(store, name, len(idx), plan_hash)
        if problem is None:
            done[i] = True
            continue
        warnings.warn(f"{store.display}/{name} {problem}; moving it aside to .{name}.bad "
                      "and redoing it", stacklevel=3)
        with contextlib.suppress(FileNotFoundError):  # another process moved it already
            store.move(name, f".{name}.bad")
    return done


def run_status(out_dir) -> dict:
    """How complete a trace folder is: ``complete`` (manifest written), ``planned`` records
    (None when unknown: a plan written before record counts were kept), ``shards`` on disk
    and ``planned_shards``."""
    from .parallel.storage import TraceStore

    store = TraceStore(out_dir)
    shards = len(store.list("shard-*.parquet"))
    for name, complete in ((MANIFEST, True), (PLAN, False)):
        if store.exists(name):
            doc = json.loads(store.read_text(name))
            return {"complete": complete, "planned": doc.get("records"), "shards": shards,
                    "planned_shards": doc.get("num_shards", doc.get("shards"))}
    return {"complete": False, "planned": None, "shards": shards, "planned_shards": None}


def read_traces(out_dir) -> dict:
    """All records of a trace directory as numpy arrays / lists, ordered by shard then row.

    Keys: prompt_id, set, attack, prompt, response, refused [N] bool, sri [N, T], tokens
    [N, G], and when saved activations [N, T*D], snapshots [N, T, G], prefix (prefilled
    runs) and template (infill runs).
    """
    import pyarrow as pa

    from .parallel.storage import TraceStore

    store = TraceStore(out_dir)
    files = store.list("shard-*.parquet")
    if not files:
        raise FileNotFoundError(f"no trace shards in {store.display}; run `sri-jax trace` first")
    tables = []
    for f in files:
        try:
            tables.append(store.read_parquet(f))
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{store.display}/{f} is damaged ({e}); rerun the trace command "
                             "that wrote it to redo the shard") from None

    t = pa.concat_tables(tables)
    rec = {name: t.column(name).to_pylist() for name in ("prompt_id", "set", "attack", "prompt",
                                                        "response")}
    rec["refused"] = np.asarray(t.column("refused").to_pylist(), bool)
    rec["sri"] = np.asarray(t.column("sri").to_pylist(), np.float32)
    rec["tokens"] = np.asarray(t.column("tokens").to_pylist(), np.int32)
    for col in ("prefix", "template"):
        if col in t.column_names:
            rec[col] = t.column(col).to_pylist()
    if "activations" in t.column_names:
        rec["activations"] = np.asarray(t.column("activations").to_pylist(), np.float32)
    if "snapshots" in t.column_names:
        rec["snapshots"] = np.asarray(t.column("snapshots").to_pylist(), np.int32).reshape(
            len(rec["sri"]), rec["sri"].shape[1], rec["tokens"].shape[1])
    return rec
