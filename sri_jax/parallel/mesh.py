"""Device meshes and parameter / batch shardings (GSPMD: ``jax.jit`` over sharded arrays).

The mesh has two axes:

``data``   the batch (prompts) is split over it; parameters are replicated along it (no
           FSDP while decoding: every step reads every weight, so gathering weights each
           step would cost more HBM bandwidth and ICI traffic than it saves memory).
``model``  tensor parallelism (Megatron layout): attention heads and MLP columns are split
           over it, so each chip holds ``1/model`` of every block.

Parameter specs derive from each parameter's declared logical axes
(:mod:`sri_jax.models.params`) by the rules table :data:`LOGICAL_RULES`; for the decoder
(``N`` = stacked layers, ``m`` = model-axis size) they give::

    embed      [V, D]        V over model when V % m == 0, else D over model, else replicated
    lm_head    [D, V]        V over model when V % m == 0, else D over model, else replicated
    wq         [N, D, H*hd]  output (heads) over model       when H % m == 0
    wk, wv     [N, D, K*hd]  output (KV heads) over model    when K % m == 0
    wo         [N, H*hd, D]  input (heads) over model        when H % m == 0
    bq / bk,bv [N, H*hd] / [N, K*hd]  like wq / wk
    w_gate, w_up [N, D, F]   output (MLP columns) over model when F % m == 0
    w_down     [N, F, D]     input over model                when F % m == 0
    norms      replicated

A dimension that does not divide is replicated instead (correct, only less memory-efficient;
:func:`sharding_fallbacks` lists them and loading warns). The KV cache ``[N, B, S, K, hd]``
follows: batch over ``data``, KV heads over ``model`` (when K % m == 0).

Everything here works the same in one process and across the processes of a pod slice
(``jax.distributed``): arrays are built with :func:`jax.make_array_from_callback`, which only
materialises the slices this process's devices hold.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"
MODEL = "model"
AXES = (DATA, MODEL)

__all__ = [
    "DATA", "MODEL", "AXES", "LOGICAL_RULES", "logical_spec", "make_mesh", "resolve_mesh_shape", "mesh_shape", "param_specs",
    "param_shardings", "sharding_fallbacks", "kv_cache_spec", "batch_spec", "place_array",
    "placer", "shard_params", "shard_model", "model_mesh", "padded_batch",
    "shard_rows", "replicate", "sampler_inputs", "to_host", "describe_shardings",
]


# ----------------------------------------------------------------------------- meshes


def resolve_mesh_shape(n_devices: int, data: int = -1, model: int = 1) -> tuple[int, int]:
    """(data, model) sizes for ``n_devices``; one of them may be -1 ("the rest")."""
    data, model = int(data), int(model)
    if data == -1 and model == -1:
        raise ValueError("make_mesh: at most one of data/model may be -1 (the rest); got both")
    for name, v in (("data", data), ("model", model)):
        if v == 0 or v < -1:
            raise ValueError(f"make_mesh: {name}={v}; use a positive size or -1 for the rest")
    if data == -1:
        if n_devices % model:
            raise ValueError(f"make_mesh: model={model} does not divide the {n_devices} devices; "
                             f"pick a divisor of {n_devices}")
        data = n_devices // model
    elif model == -1:
        if n_devices % data:
            raise ValueError(f"make_mesh: data={data} does not divide the {n_devices} devices; "
                             f"pick a divisor of {n_devices}")
        model = n_devices // data
    if data * model != n_devices:
        raise ValueError(f"make_mesh: data={data} x model={model} = {data * model} devices, but "
                         f"{n_devices} are available; the product must equal the device count "
                         "(or pass -1 for one axis)")
    return data, model


def make_mesh(data: int = -1, model: int = 1, *, devices: Optional[Sequence[Any]] = None) -> Mesh:
    """A ``("data", "model")`` mesh over ``devices`` (default: ``jax.devices()``, i.e. every
    device of every process after ``jax.distributed.initialize()``).

    ``data=-1`` / ``model=-1`` takes the rest. The device order comes from
    :func:`jax.experimental.mesh_utils.create_device_mesh`, which keeps the ``model`` axis on
    physically adjacent chips (ICI) and, across hosts, inside one host where it fits, so the
    per-layer tensor-parallel all-reduces never cross the data-centre network.
    The axes are ``Auto`` (GSPMD propagation), not JAX's explicit-sharding mode.
    """
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("make_mesh: no devices")
    d, m = resolve_mesh_shape(len(devs), data, model)
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh((d, m), devs)
    except Exception:  # noqa: BLE001 - unusual topologies: plain row-major order
        grid = np.asarray(devs, dtype=object).reshape(d, m)
    auto = getattr(jax.sharding, "AxisType", None)
    if auto is not None:
        return Mesh(grid, AXES, axis_types=(auto.Auto, auto.Auto))
    return Mesh(grid, AXES)  # pragma: no cover - older JAX


def mesh_shape(mesh: Mesh) -> tuple[int, int]:
    return int(mesh.shape[DATA]), int(mesh.shape[MODEL])


def _check_mesh(mesh: Mesh):
    if not isinstance(mesh, Mesh) or tuple(mesh.axis_names) != AXES:
        names = getattr(mesh, "axis_names", None)
        raise ValueError(f"expected a mesh with axes {AXES} (from sri_jax.make_mesh), got "
                         f"axes {names}")


# ----------------------------------------------------------------------------- param specs


def _model_size(mesh_or_size) -> int:
    if isinstance(mesh_or_size, Mesh):
        _check_mesh(mesh_or_size)
        return int(mesh_or_size.shape[MODEL])
    return int(mesh_or_size)


# Logical axis -> mesh axis, in priority order (as Flax's ``logical_axis_rules``): walking the
# rules, an array dimension with that logical axis takes the mesh axis unless the array
# already uses it or (for ``model``) the axis' unit (:func:`sri_jax.models.params.shard_unit`)
# does not divide the model-axis size; other dimensions are replicated. So a vocabulary
# table splits its vocabulary, else its hidden axis ("table_embed"), else nothing.
LOGICAL_RULES: tuple[tuple[str, str], ...] = (
    ("vocab", MODEL), ("heads", MODEL), ("kv_heads", MODEL), ("mlp", MODEL),
    ("table_embed", MODEL), ("batch", DATA))
KV_CACHE_AXES = ("layers", "batch", "length", "kv_heads", "head_dim")


def logical_spec(cfg, axes: Sequence[str], model_size: int) -> P:
    """The PartitionSpec of an array with logical ``axes`` under :data:`LOGICAL_RULES`."""
    from ..models.params import shard_unit

    spec, used = [None] * len(axes), set()
    for logical, mesh_axis in LOGICAL_RULES:
        if logical not in axes or mesh_axis in used:
            continue
        if mesh_axis == MODEL and (model_size == 1
                                   or shard_unit(cfg, logical)[1] % model_size):
            continue
        spec[list(axes).index(logical)] = mesh_axis
        used.add(mesh_axis)
    return P(*spec)


def param_specs(cfg, mesh_or_model_size) -> dict:
    """PartitionSpecs for the parameter pytree of ``cfg`` (same structure as
    :func:`sri_jax.models.params.param_shapes`), for a mesh or a model-axis size: each
    parameter's declared logical axes through :data:`LOGICAL_RULES`."""
    from ..models.params import _nest, declared

    m = _model_size(mesh_or_model_size)
    return _nest((p.path, logical_spec(cfg, p.axes, m)) for p in declared(cfg))


def sharding_fallbacks(cfg, mesh_or_model_size) -> list[str]:
    """Human-readable list of arrays replicated over ``model`` because a size does not divide
    it (arrays with a model-shardable logical axis whose spec does not use ``model``)."""
    from ..models.params import declared, shard_unit

    m = _model_size(mesh_or_model_size)
    if m == 1:
        return []
    model_axes = [a for a, mesh_axis in LOGICAL_RULES if mesh_axis == MODEL]
    arrays = [(p.name, p.axes) for p in declared(cfg)] + [("the KV cache", KV_CACHE_AXES)]
    causes: dict[tuple, list[str]] = {}
    for name, axes in arrays:
        shardable = [a for a in model_axes if a in axes]
        if shardable and MODEL not in logical_spec(cfg, axes, m):
            units = dict.fromkeys(shard_unit(cfg, a) for a in shardable)
            causes.setdefault(tuple(units), []).append(name)
    return [" and ".join(f"{f} {v} % model {m} != 0" for f, v in units)
            + f": {', '.join(names)} replicated" for units, names in causes.items()]


def _warn_fallbacks(cfg, mesh):
    fb = sharding_fallbacks(cfg, mesh)
    if fb:
        warnings.warn("tensor-parallel fallbacks (correct, but these weights are replicated "
                      "on every model shard): " + "; ".join(fb)
                      + ". Pick a model axis size that divides the head counts.", stacklevel=3)


def param_shardings(cfg, mesh: Mesh) -> dict:
    return jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs(cfg, mesh),
                        is_leaf=lambda x: isinstance(x, P))


def kv_cache_spec(cfg, mesh_or_model_size) -> P:
    """Spec of the KV cache ``[N, B, S, K, hd]``: batch over data, KV heads over model."""
    return logical_spec(cfg, KV_CACHE_AXES, _model_size(mesh_or_model_size))


def batch_spec(ndim: int = 2) -> P:
    """Spec of a batch-leading array ``[B, ...]``."""
    return P(DATA, *([None] * (ndim - 1)))


def _spec_at(specs: dict, path: tuple) -> P:
    node = specs
    for k in path:
        node = node[k]
    return node


# ----------------------------------------------------------------------------- placement


def place_array(host, sharding: NamedSharding) -> jax.Array:
    """A global array with ``sharding`` from a host array (numpy, memory map or a view):
    each local device receives only its slice, copied straight from ``host``."""
    host = host if hasattr(host, "shape") and not isinstance(host, jax.Array) else np.asarray(host)
    return jax.make_array_from_callback(tuple(host.shape), sharding,
                                        lambda idx: np.ascontiguousarray(host[idx]))


def placer(cfg, mesh: Mesh, *, warn: bool = True) -> Callable[[tuple, Any], jax.Array]:
    """``place(path, reader)`` for :func:`sri_jax.weights.hf.load_hf_dir` (what its ``mesh``
    argument uses): each parameter goes straight into its shards, and each process reads from
    the checkpoint only the slices of its own devices (``reader(index)``,
    :class:`sri_jax.weights.hf.ParamReader`): no process holds a full host copy of a sharded
    parameter."""
    _check_mesh(mesh)
    if warn:
        _warn_fallbacks(cfg, mesh)
    specs = param_specs(cfg, mesh)

    def place(path: tuple, read) -> jax.Array:
        sharding = NamedSharding(mesh, _spec_at(specs, tuple(path)))
        cache: dict = {}  # replicated slices are read once per process, not once per device

        def block(idx):
            key = tuple((s.start, s.stop, s.step) for s in idx)
            if key not in cache:
                cache[key] = read(idx)
            return cache[key]

        return jax.make_array_from_callback(tuple(read.shape), sharding, block)

    return place


def shard_params(params: dict, cfg, mesh: Mesh, *, warn: bool = True) -> dict:
    """Re-place an existing parameter pytree (e.g. dequantised GGUF or random init) with the
    tensor-parallel shardings. Leaves are copied slice by slice from their host values."""
    _check_mesh(mesh)
    if warn:
        _warn_fallbacks(cfg, mesh)
    specs = param_specs(cfg, mesh)

    def put(x, spec):
        sharding = NamedSharding(mesh, spec)
        if isinstance(x, jax.Array) and x.is_fully_addressable and len(x.devices()) == 1:
            x = np.asarray(x)
        if isinstance(x, jax.Array):
            return jax.device_put(x, sharding)
        return place_array(x, sharding)

    return jax.tree.map(put, params, specs, is_leaf=lambda x: isinstance(x, P))


def shard_model(model, mesh: Mesh):
    """A copy of ``model`` whose params are sharded over ``mesh`` (generate then runs sharded)."""
    import dataclasses

    return dataclasses.replace(model, params=shard_params(model.params, model.config, mesh))


def model_mesh(params) -> Optional[Mesh]:
    """The ``(data, model)`` mesh the params live on, or None for unsharded params."""
    leaf = params.get("embed") if isinstance(params, dict) else None
    sh = getattr(leaf, "sharding", None)
    mesh = getattr(sh, "mesh", None)
    if isinstance(sh, NamedSharding) and isinstance(mesh, Mesh) \
            and tuple(mesh.axis_names) == AXES:
        return mesh
    return None


def describe_shardings(params) -> list[tuple[str, tuple, str, tuple]]:
    """(path, global shape, spec, per-device shard shape) for every parameter."""
    rows = []
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        sh = x.sharding
        spec = str(getattr(sh, "spec", "replicated"))
        rows.append((name, tuple(x.shape), spec, tuple(sh.shard_shape(x.shape))))
    return rows


# ----------------------------------------------------------------------------- batches


def padded_batch(b: int, mesh: Mesh) -> int:
    """Smallest multiple of the data-axis size that holds ``b`` rows."""
    n = int(mesh.shape[DATA])
    return int(math.ceil(b / n) * n)


def shard_rows(mesh: Mesh, x: np.ndarray, rows: Optional[int] = None) -> jax.Array:
    """``x`` [B, ...] as a global array sharded over ``data``; rows are padded to ``rows``
    (default: the next multiple of the data axis) by repeating the last row."""
    x = np.asarray(x)
    rows = padded_batch(x.shape[0], mesh) if rows is None else rows
    if rows > x.shape[0]:
        x = np.concatenate([x, np.repeat(x[-1:], rows - x.shape[0], axis=0)])
    return place_array(x, NamedSharding(mesh, batch_spec(x.ndim)))


def replicate(mesh: Mesh, tree):
    """Every array leaf of ``tree`` replicated on every device of ``mesh`` (None kept)."""
    rep = NamedSharding(mesh, P())
    return jax.tree.map(lambda a: place_array(np.asarray(a), rep), tree)


_WRAP_FNS: dict = {}


def _replicated_key(mesh: Mesh, seed: int):
    """``jax.random.key(seed)`` replicated over ``mesh`` (bit-identical to the one-device key)."""
    data = np.asarray(jax.random.key_data(jax.random.key(seed)))
    fn = _WRAP_FNS.get(mesh)
    if fn is None:
        fn = _WRAP_FNS[mesh] = jax.jit(jax.random.wrap_key_data,
                                       out_shardings=NamedSharding(mesh, P()))
    return fn(place_array(data, NamedSharding(mesh, P())))


def sampler_inputs(mesh: Mesh, input_ids, attention_mask, seed: int, probe):
    """Inputs of one fused sampler call under ``mesh``: ids/mask padded to a multiple of the
    data axis and sharded over it; RNG key and probe replicated. Returns
    ``(ids, mask, key, probe)``; strip results back with ``[:B]``."""
    _check_mesh(mesh)
    return (shard_rows(mesh, input_ids), shard_rows(mesh, attention_mask),
            _replicated_key(mesh, int(seed)), replicate(mesh, probe))


def to_host(x) -> np.ndarray:
    """A device array as numpy; arrays spanning several processes are all-gathered first, so
    every process receives the whole result."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
