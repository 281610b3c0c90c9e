"""Scale-out: device meshes, tensor/data-parallel shardings, and multi-host runs.

    mesh = sri_jax.make_mesh(data=-1, model=2)          # every device of every process
    model = sri_jax.load_model("llada-8b-instruct", mesh=mesh)   # loads straight into shards
    res = sri_jax.generate(model, prompts, cfg)          # runs sharded, same results

Multi-host: call :func:`initialize` (``jax.distributed``) first, in every process, then the
same code; ``sri-jax trace --distributed`` does it for the CLI. See ``docs/scaling.md``.
"""

from .mesh import (AXES, DATA, MODEL, batch_spec, describe_shardings, kv_cache_spec,
                   make_mesh, mesh_shape, model_mesh, padded_batch, param_shardings, param_specs,
                   place_array, placer, replicate, resolve_mesh_shape, sampler_inputs,
                   shard_model, shard_params, shard_rows, sharding_fallbacks, to_host)
from .multihost import (all_across_processes, any_across_processes, barrier, initialize,
                        is_initialized, is_main_process, process_count, process_index,
                        shard_owner, spans_processes)
from .storage import TraceStore, is_url

__all__ = [
    "AXES", "DATA", "MODEL", "batch_spec", "describe_shardings", "kv_cache_spec",
    "make_mesh", "mesh_shape", "model_mesh", "padded_batch", "param_shardings", "param_specs",
    "place_array", "placer", "replicate", "resolve_mesh_shape", "sampler_inputs", "shard_model",
    "shard_params", "shard_rows", "sharding_fallbacks", "to_host",
    "all_across_processes", "any_across_processes", "barrier", "initialize", "is_initialized",
    "is_main_process", "process_count", "process_index", "shard_owner", "spans_processes",
    "TraceStore", "is_url",
]
