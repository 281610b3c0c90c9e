"""Tracing prompt sets to disk: SRI trajectories as sharded Parquet files, resumable.

A trace run writes into one directory::

    plan.json            what is being traced (prompt ids hash, batch size, sampler config,
                         model and centers fingerprints, shard count)
    shard-00000.parquet  one batch of records each, written to a temporary file and renamed,
    shard-00001.parquet  so a shard on disk is always complete
    ...

Rerunning the same command skips the shards already on disk, so an interrupted run resumes
without duplicating or losing records; a different plan in the same directory is an error.
Columns: prompt_id, set, attack, prompt, response, tokens, sri, refused (and activations,
[T*D] float32 row-major, when requested). pandas and polars read the directory directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

PLAN = "plan.json"


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _atomic_write_bytes(path: Path, data: bytes):
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def plan_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Deterministic length-sorted batches (stable for equal lengths)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def trace(model, prompts: Sequence[str], cfg, *, centers, out_dir, ids: Optional[Sequence[str]] = None,
          set_name: str = "prompts", attack: str = "none", batch_size: int = 16,
          judge: Optional[Callable[[str], bool]] = None, save_activations: bool = False,
          seed: int = 0, progress: bool = True, shard_filter: Optional[Callable[[int], bool]] = None,
          system_prompt="default") -> Path:
    """Generate, read SRI, judge refusals and write records under ``out_dir``. Returns the dir.

    ``shard_filter(i)`` selects which shards this process writes (multi-host tracing); the
    plan is the same on every process.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    from .sampling.api import generate
    from .sri.centers import check_compatible
    from .sri.judge import is_refusal

    judge = judge or is_refusal
    prompts = list(prompts)
    if not prompts:
        raise ValueError(f"prompt set {set_name!r} is empty: nothing to trace")
    ids = [str(i) for i in (ids if ids is not None else range(len(prompts)))]
    if len(ids) != len(prompts) or len(set(ids)) != len(ids):
        raise ValueError("ids must be unique and one per prompt")
    check_compatible(centers, model, cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lengths = [model.encode_chat([p], system_prompt)[0].shape[1] for p in prompts]
    batches = plan_batches(lengths, batch_size)
    plan = {"ids": _hash(ids), "prompts": _hash(prompts), "batch_size": batch_size,
            "sampler": cfg.to_dict(), "model": model.name, "weight_hash": model.weight_hash,
            "centers": _hash({"meta": dict(centers.meta),
                              "sum": float(np.asarray(centers.harmless, np.float64).sum()
                                           + np.asarray(centers.harmful, np.float64).sum())}),
            "set": set_name, "attack": attack, "seed": seed, "shards": len(batches),
            "save_activations": save_activations}
    plan_path = out / PLAN
    if plan_path.exists():
        old = json.loads(plan_path.read_text())
        if old != plan:
            diff = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
            raise ValueError(f"{out} already holds a different trace run (differs in {diff}); "
                             "use a new output directory or delete the old one")
    else:
        _atomic_write_bytes(plan_path, json.dumps(plan, indent=2, sort_keys=True).encode())

    todo = [i for i in range(len(batches))
            if (shard_filter is None or shard_filter(i)) and not shard_path(out, i).exists()]
    n_todo = sum(len(batches[i]) for i in todo)
    t0 = time.perf_counter()
    with tqdm(total=n_todo, desc=f"trace {set_name}/{attack}", unit="prompt",
              disable=not progress) as bar:
        for i in todo:
            idx = batches[i]
            batch = [prompts[j] for j in idx]
            batch += [batch[-1]] * (batch_size - len(batch))
            res = generate(model, batch, cfg, centers=centers, seed=seed + i,
                           return_activations=save_activations, system_prompt=system_prompt)
            n = len(idx)
            cols = {
                "prompt_id": [ids[j] for j in idx], "set": [set_name] * n,
                "attack": [attack] * n, "prompt": [prompts[j] for j in idx],
                "response": res.texts[:n],
                "tokens": pa.array([r.tolist() for r in res.tokens[:n]], pa.list_(pa.int32())),
                "sri": pa.array([r.tolist() for r in res.sri[:n]], pa.list_(pa.float32())),
                "refused": [bool(judge(t)) for t in res.texts[:n]],
            }
            if save_activations:
                cols["activations"] = pa.array(
                    [r.reshape(-1).tolist() for r in res.activations[:n]], pa.list_(pa.float32()))
            table = pa.table(cols)
            path = shard_path(out, i)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            pq.write_table(table, tmp)
            os.replace(tmp, path)
            bar.update(n)
            bar.set_postfix(prompts_per_s=f"{bar.n / (time.perf_counter() - t0):.2f}")
    return out


def shard_path(out: Path, i: int) -> Path:
    return Path(out) / f"shard-{i:05d}.parquet"


def read_traces(out_dir) -> dict:
    """All records of a trace directory as numpy arrays / lists, ordered by shard then row.

    Keys: prompt_id, set, attack, prompt, response, refused [N] bool, sri [N, T], tokens
    [N, G], and activations [N, T*D] when saved.
    """
    import pyarrow.parquet as pq

    out = Path(out_dir)
    files = sorted(out.glob("shard-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no trace shards in {out}; run `sri-jax trace` first")
    tables = [pq.read_table(f) for f in files]
    import pyarrow as pa

    t = pa.concat_tables(tables)
    rec = {name: t.column(name).to_pylist() for name in ("prompt_id", "set", "attack", "prompt",
                                                        "response")}
    rec["refused"] = np.asarray(t.column("refused").to_pylist(), bool)
    rec["sri"] = np.asarray(t.column("sri").to_pylist(), np.float32)
    rec["tokens"] = np.asarray(t.column("tokens").to_pylist(), np.int32)
    if "activations" in t.column_names:
        rec["activations"] = np.asarray(t.column("activations").to_pylist(), np.float32)
    return rec
