"""Multi-host runs on JAX's own runtime: ``jax.distributed`` for the process group, GSPMD for
the computation, and a few collective helpers the tracer needs (agreeing on what is done,
barriers). There is no scheduler of our own: every process runs the same program.

On a Cloud TPU pod slice, ``initialize()`` with no arguments reads the coordinator, process
count and process id from the TPU metadata; on SLURM / Open MPI / Kubernetes JAX's cluster
detection does the same; elsewhere pass ``coordinator="host:port"``, ``num_processes`` and
``process_id`` (or set ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
``JAX_PROCESS_ID``).
"""

from __future__ import annotations

import os
from typing import Optional

import jax
import numpy as np

__all__ = ["initialize", "is_initialized", "process_index", "process_count", "shard_owner",
           "spans_processes", "any_across_processes", "all_across_processes", "barrier",
           "is_main_process"]

_INITIALIZED = False


def is_initialized() -> bool:
    if _INITIALIZED:
        return True
    probe = getattr(jax.distributed, "is_initialized", None)
    if probe is not None:
        return bool(probe())
    try:  # older JAX: the private flag
        from jax._src import distributed

        return distributed.global_state.client is not None
    except Exception:  # noqa: BLE001
        return False


def _env_int(name: str) -> Optional[int]:
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else None


def initialize(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *, local_device_ids=None,
               initialization_timeout: int = 300) -> None:
    """Join the process group (idempotent). Must run before anything touches a JAX device.

    With no arguments (and no ``JAX_COORDINATOR_ADDRESS`` etc. in the environment) JAX
    auto-detects the cluster (Cloud TPU, SLURM, Open MPI, Kubernetes ...). A single-process
    job (``num_processes=1``) skips ``jax.distributed`` entirely.
    """
    global _INITIALIZED
    if is_initialized():
        return
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    if num_processes == 1 and coordinator is None:
        return
    if coordinator is not None and (num_processes is None or process_id is None):
        raise ValueError(f"coordinator {coordinator!r} given without num_processes/process_id; "
                         "pass all three (--coordinator HOST:PORT --num-processes N "
                         "--process-id I) or none for auto-detection")
    if num_processes is not None and process_id is not None \
            and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id {process_id} out of range for {num_processes} processes "
                         f"(valid: 0..{num_processes - 1})")
    kwargs = {}
    if local_device_ids is not None:
        kwargs["local_device_ids"] = local_device_ids
    try:  # CPU backend: cross-process collectives need gloo (older JAX defaulted to none)
        if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") in (None, "none"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # noqa: BLE001 - option absent or renamed
        pass
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id,
                               initialization_timeout=initialization_timeout, **kwargs)
    _INITIALIZED = True


def process_index() -> int:
    return int(jax.process_index())


def process_count() -> int:
    return int(jax.process_count())


def is_main_process() -> bool:
    return process_index() == 0


def shard_owner(shard: int, num_processes: Optional[int] = None) -> int:
    """The process that writes trace shard ``shard``: round robin, ``shard % num_processes``
    (deterministic, so a restarted job with the same process count reclaims its shards)."""
    n = process_count() if num_processes is None else int(num_processes)
    return int(shard) % n


def spans_processes(params) -> bool:
    """True when the params are global arrays over devices of several processes: every process
    must then take part in every sampler call (SPMD)."""
    leaves = jax.tree.leaves(params)
    return any(isinstance(x, jax.Array) and not x.is_fully_addressable for x in leaves)


def _gather(mask: np.ndarray) -> np.ndarray:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(mask)))


def any_across_processes(mask) -> np.ndarray:
    """Elementwise OR of a boolean array over all processes (identity in one process)."""
    mask = np.asarray(mask, bool)
    if process_count() == 1:
        return mask
    return _gather(mask.astype(np.int32)).reshape((-1,) + mask.shape).any(axis=0)


def all_across_processes(mask) -> np.ndarray:
    """Elementwise AND of a boolean array over all processes."""
    return ~any_across_processes(~np.asarray(mask, bool))


def barrier(name: str) -> None:
    """Wait until every process reaches ``name`` (no-op in one process)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
