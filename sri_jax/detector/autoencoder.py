"""SRI Guard: a one-class MLP autoencoder on SRI traces, and a supervised baseline.

``SRIGuard`` (the paper's detector, REFERENCE.md section 2)
    A Flax NNX MLP autoencoder on the T-dim SRI trace (sigma_1..sigma_T), trained ONLY on
    harmless (benign) traces with an L2 reconstruction loss. Default widths
    T -> 32 -> 16 -> 32 -> T (two encoder, two decoder layers, biases; 3,184 parameters for
    T = 32; the paper says "about 3k", its exact widths are unknown). ``tanh`` after every
    layer but the last (linear output).

    Anomaly score = per-trace mean squared reconstruction error
        error(x) = mean_t (x_t - AE(x)_t)^2            (HIGHER = MORE ANOMALOUS)
    Threshold = ``np.quantile(errors_on_held_out_benign, quantile)`` with numpy's default
    ("linear") interpolation, ``quantile = 0.99`` by default: the paper's 99th percentile on
    held-out harmless traces. A trace is flagged (predicted jailbreak) when error > threshold.

    Sign conventions, since scikit-learn's are the opposite for outlier detectors:
      * ``score_samples(X)``      -> reconstruction error, HIGHER = MORE ANOMALOUS (unlike
                                     sklearn, whose score_samples is "higher = more normal").
      * ``decision_function(X)``  -> ``threshold_ - error``, exactly like sklearn's outlier
                                     detectors: negative = outlier (flagged), positive = inlier.
      * ``predict(X)``            -> bool array, True = flagged as a jailbreak (NOT sklearn's
                                     +1/-1).

``SRIClassifier`` (a supervised baseline, NOT the paper's detector)
    An MLP binary classifier (T -> 32 -> 16 -> 1, sigmoid BCE) trained on benign AND attack
    traces. It needs labelled jailbreak data, so it is only a comparison point: the SRI Guard
    never sees an attack at training time.

Both train with optax AdamW; the whole training loop (all epochs and minibatches) is ONE jitted
``lax.scan`` program. Same data, config and seed give the same parameters.

For use inside a jitted sampler there are pure functions over a plain parameter pytree
``{"layers": [{"kernel": [in, out], "bias": [out]}, ...]}`` (jnp only, no side effects):
``guard_score(params, traces, activation)`` and ``classifier_logits(...)``;
``SRIGuard.as_pure()`` returns ``(fn, params, threshold)`` with ``fn(params, traces) > threshold``
reproducing ``predict`` exactly (see ``as_pure``).

On disk a detector is a directory (written to a temporary sibling and renamed into place, so a
failed save never touches an existing checkpoint; only into a new or empty folder, or over
another detector with ``overwrite=True``, see :mod:`sri_jax.artifacts`)::

    artifact.json   kind "detector"
    params/         orbax StandardCheckpointer checkpoint of the plain parameter pytree
    detector.json   kind, config, n_features, threshold, quantile, centers_meta,
                    centers_hash (fingerprint of the center arrays), training summary,
                    library version, format version

``load`` refuses a damaged checkpoint with one line naming the file: unreadable JSON, a
threshold that is not a finite number (a NaN threshold would never flag), a config that does
not build, missing or unreadable parameters.

A detector binds to the center arrays it was trained against (``fit(...,
centers_meta=<Centers>)`` records their fingerprint); ``check_centers`` refuses other arrays,
a bare metadata dict, and, for a detector fitted without arrays, any centers, unless
``allow_unverified=True``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import lax
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from .._version import __version__
from ..artifacts import (ArtifactError, atomic_directory, json_default, read_json, recover,
                         restore_tree, save_tree, write_json)
from ..sri.centers import CentersMismatchError, centers_fingerprint, check_match

FORMAT_VERSION = 1

ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,  # tanh approximation (jax default)
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "sigmoid": jax.nn.sigmoid,
}

# ----------------------------------------------------------------------------- pure functions

def _activation(name: str) -> Callable:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") \
            from None


def mlp_forward(params, x, activation: str = "tanh"):
    """The :class:`MLP` module's forward on a plain parameter pytree (``params_`` layout;
    jnp or numpy arrays): ``activation`` after every layer but the last (linear output)."""
    return MLP.from_plain(params, activation)(x)


def _reconstruction_error(x, recon):
    return jnp.mean(jnp.square(x - recon), axis=-1)


def guard_score(params, traces, activation: str = "tanh"):
    """Reconstruction error per trace, mean_t (x_t - AE(x)_t)^2: [..., T] -> [...] (fp32).

    Pure jnp (safe inside ``jax.jit`` / ``lax.scan``); higher = more anomalous.
    """
    x = jnp.asarray(traces, jnp.float32)
    return _reconstruction_error(x, mlp_forward(params, x, activation))


def classifier_logits(params, traces, activation: str = "tanh"):
    """Attack logit per trace (SRIClassifier): [..., T] -> [...] (fp32). Pure jnp."""
    x = jnp.asarray(traces, jnp.float32)
    return mlp_forward(params, x, activation)[..., 0]


def classifier_proba(params, traces, activation: str = "tanh"):
    """Attack probability per trace (SRIClassifier): sigmoid of ``classifier_logits``."""
    return jax.nn.sigmoid(classifier_logits(params, traces, activation))


@functools.partial(jax.jit, static_argnames=("graphdef", "kind"))
def _module_output(graphdef, state, x, *, kind: str):
    """The fitted module (``nnx.split`` of it: no parameter copy) on ``x`` [N, T]: the
    reconstruction error (``kind`` "reconstruction") or the attack logit ("bce")."""
    out = nnx.merge(graphdef, state)(x)
    return _reconstruction_error(x, out) if kind == "reconstruction" else out[..., 0]


def count_params(dims) -> int:
    dims = list(dims)
    return int(sum(a * b + b for a, b in zip(dims[:-1], dims[1:])))


# ----------------------------------------------------------------------------- the NNX model

class MLP(nnx.Module):
    """Dense layers ``dims[0] -> dims[1] -> ... -> dims[-1]`` with biases; ``activation``
    after every layer but the last."""

    def __init__(self, dims, activation: str, *, rngs: nnx.Rngs):
        _activation(activation)
        self.dims = tuple(int(d) for d in dims)
        self.activation = activation
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs)
                                for a, b in zip(self.dims[:-1], self.dims[1:])])

    def __call__(self, x):
        act = _activation(self.activation)
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < n - 1:
                x = act(x)
        return x

    @classmethod
    def from_plain(cls, params, activation: str) -> "MLP":
        """The module holding a plain parameter pytree (also inside ``jax.jit``: the
        parameters may be tracers)."""
        layers = params["layers"]
        dims = (layers[0]["kernel"].shape[0], *(l["kernel"].shape[1] for l in layers))
        model = nnx.eval_shape(lambda: cls(dims, activation, rngs=nnx.Rngs(0)))
        for layer, p in zip(model.layers, layers, strict=True):
            layer.kernel.set_value(jnp.asarray(p["kernel"], jnp.float32))
            layer.bias.set_value(jnp.asarray(p["bias"], jnp.float32))
        return model

    def param_tree(self) -> dict:
        """Parameters as the plain pytree the pure functions take (the module's arrays)."""
        return {"layers": [{"kernel": l.kernel[...], "bias": l.bias[...]} for l in self.layers]}

    def plain_params(self) -> dict:
        """:meth:`param_tree` as numpy float32 copies (what ``save`` writes)."""
        return jax.tree.map(lambda a: np.array(a, np.float32), self.param_tree())

    def load_plain_params(self, params) -> None:
        for layer, p in zip(self.layers, params["layers"], strict=True):
            for name in ("kernel", "bias"):
                var = getattr(layer, name)
                new = np.asarray(p[name], np.float32)
                if new.shape != tuple(var.shape):
                    raise ValueError(f"parameter {name} has shape {new.shape}, the model "
                                     f"expects {tuple(var.shape)}")
                var.set_value(jnp.asarray(new))


# ----------------------------------------------------------------------------- training

@functools.partial(jax.jit, static_argnums=(0, 1))
def _init_params(dims, activation, seed):
    """Fresh NNX (lecun-normal) parameters as one compiled program: far cheaper than eager
    init, which compiles every random op separately for each new shape."""
    model = MLP(dims, activation, rngs=nnx.Rngs(jax.random.key(seed)))
    return nnx.split(model, nnx.Param)[1]


@functools.partial(jax.jit, static_argnames=("graphdef", "loss_kind", "epochs", "batch_size"))
def _train(graphdef, params, x, y, key, learning_rate, weight_decay, *, loss_kind: str,
           epochs: int, batch_size: int):
    """All epochs x minibatches as one ``lax.scan`` program. Returns (params, loss per epoch)."""
    tx = optax.adamw(learning_rate, weight_decay=weight_decay)
    opt_state = tx.init(params)
    n = x.shape[0]
    bs = min(batch_size, n)
    n_batches = n // bs  # the incomplete last batch of each (reshuffled) epoch is dropped

    def loss_fn(p, xb, yb):
        out = nnx.merge(graphdef, p)(xb)
        if loss_kind == "reconstruction":
            return jnp.mean(jnp.square(out - xb))
        return jnp.mean(optax.sigmoid_binary_cross_entropy(out[:, 0], yb))

    def step(carry, idx):
        p, s = carry
        loss, g = jax.value_and_grad(loss_fn)(p, x[idx], y[idx])
        updates, s = tx.update(g, s, p)
        return (optax.apply_updates(p, updates), s), loss

    def epoch(carry, k):
        perm = jax.random.permutation(k, n)[: n_batches * bs].reshape(n_batches, bs)
        carry, losses = lax.scan(step, carry, perm)
        return carry, jnp.mean(losses)

    (params, _), history = lax.scan(epoch, (params, opt_state), jax.random.split(key, epochs))
    return params, history


# ----------------------------------------------------------------------------- helpers

def validate_traces(traces, *, name: str = "traces", n_features: Optional[int] = None
                    ) -> np.ndarray:
    """[N, T] finite float array, or a ValueError naming the problem and the fix."""
    try:
        x = np.asarray(traces, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a numeric [N, T] array of SRI traces: {e}") from None
    if x.ndim != 2:
        hint = " (for a single trace use traces[None, :])" if x.ndim == 1 else ""
        raise ValueError(f"{name} must be a 2-D [N, T] array (N traces of T steps), got "
                         f"shape {x.shape}{hint}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}); need at least one trace of T>0 "
                         "steps")
    if n_features is not None and x.shape[1] != n_features:
        raise ValueError(f"{name} have T={x.shape[1]} steps but the detector was fitted on "
                         f"T={n_features}; trace with the same sampler steps as the training "
                         "traces or fit a new detector")
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        shown = ", ".join(str(r) for r in rows[:10]) + (", ..." if rows.size > 10 else "")
        raise ValueError(f"{name} contain {int(bad.sum())} NaN/inf values in {rows.size} "
                         f"row(s) [{shown}]; drop or recompute those traces")
    return x


def _jsonable(obj) -> Any:
    """JSON-normalised copy (tuples -> lists, numpy scalars -> numbers, other -> str)."""
    return json.loads(json.dumps(obj, default=json_default, sort_keys=True))


def _float32_floor(t: float) -> np.float32:
    """Largest float32 <= t, so that ``err32 > result`` <=> ``float64(err32) > t``."""
    f = np.float32(t)
    if float(f) > t:
        f = np.nextafter(f, np.float32(-np.inf))
    return np.float32(f)


# ----------------------------------------------------------------------------- estimators

@dataclasses.dataclass(frozen=True)
class _BaseConfig:
    hidden: tuple = (32, 16)
    activation: str = "tanh"
    epochs: int = 200
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: Optional[int] = 64  # None = full batch
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must be a non-empty tuple of positive widths, got "
                             f"{self.hidden}")
        _activation(self.activation)
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None (full batch), got "
                             f"{self.batch_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


@dataclasses.dataclass(frozen=True)
class GuardConfig(_BaseConfig):
    quantile: float = 0.99

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {self.quantile}")


@dataclasses.dataclass(frozen=True)
class ClassifierConfig(_BaseConfig):
    threshold: float = 0.5  # on the attack probability

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be a probability in [0, 1], got {self.threshold}")


class _MLPDetector(BaseEstimator):
    """Shared machinery: model building, training, persistence, centers checks.

    A scikit-learn estimator: the constructor's keyword arguments are its parameters
    (``get_params`` / ``set_params``; ``sklearn.base.clone`` gives an unfitted copy), checked
    as one frozen config (:attr:`config`) when set. The centers a detector is bound to are fit
    data: ``fit(..., centers_meta=<Centers>)``."""

    _config_cls = _BaseConfig
    _loss_kind = ""

    def _init(self, params: dict) -> None:
        """Set the constructor's arguments (``locals()``) as the parameters and check them."""
        params = {k: v for k, v in params.items() if k in self._get_param_names()}
        for k, v in params.items():
            setattr(self, k, v)
        self._config_cls(**params)  # a bad value is refused here, not at fit time
        self.centers_meta: dict = {}
        self.centers_hash: Optional[str] = None
        self.model_: Optional[MLP] = None
        self.n_features_: Optional[int] = None
        self.threshold_: Optional[float] = None
        self.loss_history_: Optional[np.ndarray] = None

    @property
    def config(self):
        """The parameters as the validated frozen config (``GuardConfig`` /
        ``ClassifierConfig``)."""
        return self._config_cls(**self.get_params())

    def set_params(self, **params):
        self._config_cls(**{**self.get_params(), **params})
        return super().set_params(**params)

    def _forward(self, traces) -> np.ndarray:
        """The fitted module on validated ``traces`` [N, T] (float64 copy of its fp32 output:
        reconstruction error or attack logit), through the same Flax forward it trains with."""
        self._check_fitted()
        x = validate_traces(traces, n_features=self.n_features_)
        split = self.__dict__.get("_split")  # nnx.split of the fitted (read-only) module
        if split is None or split[0] is not self.model_:
            split = self._split = (self.model_, *nnx.split(self.model_, nnx.Param))
        out = _module_output(split[1], split[2], jnp.asarray(x, jnp.float32),
                             kind=self._loss_kind)
        return np.asarray(out).astype(np.float64)

    def as_pure(self):
        """``(fn, params, threshold)`` for use inside jitted code: ``fn(params, traces[...,
        T])`` -> score [...] (fp32, pure jnp; the same module forward), ``params`` the plain
        pytree of the module's arrays, ``threshold`` a float32 scalar equal to the largest
        float32 <= ``threshold_``, so ``fn(params, x) > threshold`` equals ``predict(x)``
        exactly (a Python-float threshold would be rounded to nearest in jnp)."""
        self._check_fitted()
        fn = functools.partial(self._pure_fn, activation=self.config.activation)
        return fn, self.model_.param_tree(), _float32_floor(self.threshold_)

    # --- structure -----------------------------------------------------------------------
    def _dims(self, n_features: int) -> tuple:
        raise NotImplementedError

    def num_params(self, n_features: Optional[int] = None) -> int:
        """Parameter count for T = ``n_features`` (default: the fitted T)."""
        n_features = n_features or self.n_features_
        if n_features is None:
            raise ValueError("pass n_features (T) or fit the detector first")
        return count_params(self._dims(n_features))

    def _build(self, n_features: int, *, init: bool = True) -> MLP:
        """The NNX model; ``init=False`` leaves abstract shapes (to be filled by a restore)."""
        dims, act = self._dims(n_features), self.config.activation
        model = nnx.eval_shape(lambda: MLP(dims, act, rngs=nnx.Rngs(0)))
        if init:
            nnx.update(model, _init_params(dims, act, int(self.config.seed)))
        return model

    def _set_centers(self, centers_or_meta) -> None:
        if hasattr(centers_or_meta, "harmless") and hasattr(centers_or_meta, "meta"):
            self.centers_meta = _jsonable(dict(centers_or_meta.meta))
            self.centers_hash = centers_fingerprint(centers_or_meta)
        elif isinstance(centers_or_meta, Mapping):
            self.centers_meta = _jsonable(dict(centers_or_meta))
        else:
            raise TypeError("centers_meta must be a dict (Centers.meta) or a Centers object, "
                            f"got {type(centers_or_meta).__name__}")

    def _check_fitted(self) -> None:
        if self.model_ is None:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(...) "
                                 f"or {type(self).__name__}.load(path) first")

    @property
    def params_(self) -> dict:
        """Trained parameters as a plain pytree (numpy float32 copies)."""
        self._check_fitted()
        return self.model_.plain_params()

    def _fit_model(self, x: np.ndarray, y: np.ndarray) -> None:
        c = self.config
        model = self._build(x.shape[1])
        graphdef, params = nnx.split(model, nnx.Param)
        bs = x.shape[0] if c.batch_size is None else min(int(c.batch_size), x.shape[0])
        key = jax.random.fold_in(jax.random.key(c.seed), 1)
        params, history = _train(graphdef, params, jnp.asarray(x, jnp.float32),
                                 jnp.asarray(y, jnp.float32), key,
                                 jnp.float32(c.learning_rate), jnp.float32(c.weight_decay),
                                 loss_kind=self._loss_kind, epochs=int(c.epochs), batch_size=bs)
        nnx.update(model, params)
        history = np.asarray(history)
        if not np.all(np.isfinite(history)):
            raise FloatingPointError("training diverged (non-finite loss); lower learning_rate")
        self.model_ = model
        self.n_features_ = int(x.shape[1])
        self.loss_history_ = history

    # --- centers ---------------------------------------------------------------------------
    def check_centers(self, centers, *, tau: Optional[float] = None,
                      allow_unverified: bool = False) -> None:
        """Raise ``CentersMismatchError`` unless ``centers`` match the centers this detector
        was trained against.

        Compared: T (centers steps vs the fitted T), the center arrays' fingerprint, and every
        sigma field (:data:`sri_jax.sri.centers.SIGMA_KEYS`) recorded at fit time; ``tau`` if
        given and recorded. A bare metadata dict, or any centers for a detector fitted without
        center arrays, cannot be verified: refused unless ``allow_unverified=True`` (then
        only the metadata is compared).
        """
        problems = []
        is_centers = hasattr(centers, "harmless") and hasattr(centers, "meta")
        name = type(self).__name__
        if not is_centers and not allow_unverified:
            raise CentersMismatchError(
                f"a centers metadata dict cannot be verified against this {name}: pass the "
                "Centers object itself (its arrays are fingerprinted), or "
                "allow_unverified=True")
        if is_centers and self.centers_hash is None and not allow_unverified:
            raise CentersMismatchError(
                f"this {name} was fitted without center arrays, so it cannot verify which "
                "centers its traces came from; fit it with centers_meta=<the Centers object>, "
                "or pass allow_unverified=True")
        meta = _jsonable(dict(centers.meta if is_centers else centers))
        if is_centers and self.n_features_ is not None and \
                int(np.shape(centers.harmless)[0]) != self.n_features_:
            problems.append(f"centers have T={np.shape(centers.harmless)[0]} steps, the "
                            f"detector was fitted on T={self.n_features_}")
        if is_centers and self.centers_hash is not None:
            got = centers_fingerprint(centers)
            if got != self.centers_hash:
                problems.append(f"center arrays differ (fingerprint {got}, detector trained "
                                f"against {self.centers_hash})")
        mine = self.centers_meta
        if tau is not None and "tau" in mine and float(mine["tau"]) != float(tau):
            problems.append(f"tau: detector {mine['tau']!r} vs run {tau!r}")
        check_match(meta, mine, "detector", what=f"the ones this {name} was trained against",
                    problems=problems, complete=True,
                    fix="Use the centers it was trained with, or fit a new detector on SRI "
                        "traces computed with these centers.")

    # --- persistence -------------------------------------------------------------------------
    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, state: dict) -> None:
        pass

    def save(self, path, *, overwrite: bool = False) -> Path:
        """Write the detector to directory ``path`` atomically (temp sibling + rename): a new
        or empty folder, or over another detector with ``overwrite=True``."""
        self._check_fitted()
        path = Path(path)
        with atomic_directory(path, "detector", fmt=FORMAT_VERSION, overwrite=overwrite) as tmp:
            save_tree(tmp / "params", self.params_)
            write_json(tmp / "detector.json", {
                "format": FORMAT_VERSION, "kind": type(self).__name__,
                "config": _jsonable(dataclasses.asdict(self.config)),
                "n_features": self.n_features_, "threshold": self.threshold_,
                "centers_meta": self.centers_meta, "centers_hash": self.centers_hash,
                "num_params": self.num_params(),
                "final_loss": float(self.loss_history_[-1]) if self.loss_history_ is not None
                else None,
                **self._extra_state(), "version": __version__})
        return path

    @classmethod
    def load(cls, path, *, centers=None, allow_unverified: bool = False):
        """Load a detector saved with ``save``; with ``centers`` also run ``check_centers``."""
        path = Path(path)
        recover(path)
        meta_file = path / "detector.json"
        if not meta_file.is_file() or not (path / "params").is_dir():
            raise FileNotFoundError(f"no {cls.__name__} checkpoint at {path} (expected "
                                    f"{meta_file} and {path / 'params'}); create one with "
                                    f"{cls.__name__}(...).fit(...).save(path)")
        fix = f"the checkpoint is damaged; save the detector again ({cls.__name__}.save)"
        meta = read_json(meta_file, "detector metadata", fix)
        if meta.get("kind") != cls.__name__:
            raise ValueError(f"{path} holds a {meta.get('kind')!r}, not a {cls.__name__}; load "
                             f"it with {meta.get('kind')}.load")
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path} has detector format {meta.get('format')}, this library "
                             f"reads format {FORMAT_VERSION}")
        threshold = meta.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or \
                not np.isfinite(threshold):
            raise ArtifactError(f"{meta_file}: threshold {threshold!r} is not a finite number "
                                f"(a NaN or missing threshold would never flag); {fix}")
        try:
            cfg = dict(meta["config"])
            cfg["hidden"] = tuple(cfg["hidden"])
            obj = cls(**cfg)
            n = meta["n_features"]
            if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= 1 << 20:
                raise ValueError(f"n_features {n!r} is not a positive step count")
            model = obj._build(n, init=False)
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{meta_file}: bad config ({e}); {fix}") from None
        obj.centers_meta = dict(meta.get("centers_meta") or {})
        obj.centers_hash = meta.get("centers_hash")
        target = {"layers": [{"kernel": np.zeros(l.kernel.shape, np.float32),
                              "bias": np.zeros(l.bias.shape, np.float32)}
                             for l in model.layers]}
        try:
            params = restore_tree(path / "params", target)
            model.load_plain_params(params)
        except Exception as e:  # orbax / tensorstore raise many types for damaged files
            why = (str(e).splitlines() or [type(e).__name__])[0][:200]
            raise ArtifactError(f"{path / 'params'}: cannot read the detector parameters "
                                f"({why}); {fix}") from None
        obj.model_ = model
        obj.n_features_ = n
        obj.threshold_ = float(threshold)
        obj._load_extra_state(meta)
        if centers is not None:
            obj.check_centers(centers, allow_unverified=allow_unverified)
        return obj

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.config, f.name)!r}"
                           for f in dataclasses.fields(self.config))
        return f"{type(self).__name__}({fields})"


class SRIGuard(_MLPDetector):
    """One-class SRI Guard: MLP autoencoder on benign SRI traces (see module docstring).

    Parameters (keyword only): ``hidden=(32, 16)`` (encoder widths; the decoder mirrors them),
    ``activation="tanh"``, ``epochs=200``, ``learning_rate=3e-3``, ``weight_decay=1e-4``
    (AdamW), ``batch_size=64`` (None = full batch), ``seed=0``, ``quantile=0.99``. The centers
    (a Centers object or its ``meta`` dict) are given to ``fit``.

    Fitted attributes: ``threshold_``, ``n_features_`` (T), ``model_`` (the NNX module),
    ``params_`` (plain pytree), ``holdout_scores_`` (errors of the held-out benign traces the
    threshold came from), ``train_indices_`` / ``holdout_indices_`` (None when an explicit
    holdout was given), ``loss_history_`` (mean training loss per epoch).
    """

    _config_cls = GuardConfig
    _loss_kind = "reconstruction"
    _pure_fn = staticmethod(guard_score)

    def __init__(self, *, hidden=(32, 16), activation="tanh", epochs=200, learning_rate=3e-3,
                 weight_decay=1e-4, batch_size=64, seed=0, quantile=0.99):
        self._init(locals())

    def _dims(self, n_features: int) -> tuple:
        h = self.config.hidden
        return (n_features, *h, *reversed(h[:-1]), n_features)

    def fit(self, benign_traces, *, holdout=None, fraction: float = 0.2, centers_meta=None):
        """Train on benign traces only and set ``threshold_``.

        ``holdout``: explicit held-out benign traces [M, T] for the threshold (then all of
        ``benign_traces`` are used for training). Otherwise a random ``fraction`` of
        ``benign_traces`` (seeded by ``seed``) is held out. ``threshold_`` =
        ``np.quantile(score_samples(held_out), quantile)`` (numpy's default linear method).
        """
        x = validate_traces(benign_traces, name="benign_traces")
        if centers_meta is not None:
            self._set_centers(centers_meta)
        if holdout is not None:
            x_hold = validate_traces(holdout, name="holdout", n_features=x.shape[1])
            x_train = x
            self.train_indices_ = self.holdout_indices_ = None
        else:
            if not 0.0 < fraction < 1.0:
                raise ValueError(f"fraction must be in (0, 1), got {fraction}")
            n = x.shape[0]
            n_hold = int(round(fraction * n))
            if n_hold < 1 or n - n_hold < 1:
                raise ValueError(f"cannot hold out fraction={fraction} of {n} traces and keep "
                                 "both parts non-empty; give more traces or an explicit "
                                 "holdout=")
            perm = np.random.default_rng(self.config.seed).permutation(n)
            self.holdout_indices_ = np.sort(perm[:n_hold])
            self.train_indices_ = np.sort(perm[n_hold:])
            x_train, x_hold = x[self.train_indices_], x[self.holdout_indices_]
        self._fit_model(x_train, np.zeros(x_train.shape[0]))
        self.holdout_scores_ = self.score_samples(x_hold)
        self.threshold_ = float(np.quantile(self.holdout_scores_, self.config.quantile))
        return self

    def score_samples(self, traces) -> np.ndarray:
        """Reconstruction error per trace [N] (float64 copy of the fp32 error).

        HIGHER = MORE ANOMALOUS (the opposite of sklearn's score_samples convention; use
        ``decision_function`` for sklearn's sign)."""
        return self._forward(traces)

    def decision_function(self, traces) -> np.ndarray:
        """``threshold_ - error`` (sklearn convention): < 0 = flagged, >= 0 = passes."""
        return self.threshold_ - self.score_samples(traces)

    def predict(self, traces) -> np.ndarray:
        """Bool [N]: True = flagged as a jailbreak (error > threshold_)."""
        return self.score_samples(traces) > self.threshold_

    def _extra_state(self) -> dict:
        return {"quantile": self.config.quantile}


class SRIClassifier(_MLPDetector):
    """SUPERVISED baseline: MLP (T -> 32 -> 16 -> 1) trained with sigmoid BCE on benign (y=0)
    AND attack/jailbreak (y=1) traces. Unlike ``SRIGuard`` it needs labelled attack data, so
    it measures what a detector that has seen the attacks could do; it is not the paper's
    one-class detector.

    ``decision_function`` = attack logit (higher = more attack-like, sklearn's classifier
    convention), ``predict_proba`` = [N, 2] (benign, attack), ``predict`` = attack probability
    > ``threshold`` (default 0.5), True = flagged.
    """

    _config_cls = ClassifierConfig
    _loss_kind = "bce"
    _pure_fn = staticmethod(classifier_proba)

    def __init__(self, *, hidden=(32, 16), activation="tanh", epochs=200, learning_rate=3e-3,
                 weight_decay=1e-4, batch_size=64, seed=0, threshold=0.5):
        self._init(locals())

    def _dims(self, n_features: int) -> tuple:
        return (n_features, *self.config.hidden, 1)

    def fit(self, traces, labels, *, centers_meta=None):
        """``traces`` [N, T]; ``labels`` [N] with 1/True = attack (jailbreak), 0 = benign."""
        x = validate_traces(traces, name="traces")
        y = np.asarray(labels)
        if y.shape != (x.shape[0],):
            raise ValueError(f"labels must have shape ({x.shape[0]},) to match traces, got "
                             f"{y.shape}")
        if not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be 0 (benign) or 1 (attack)")
        y = y.astype(np.float64)
        if y.min() == y.max():
            raise ValueError("labels contain a single class; SRIClassifier needs benign (0) "
                             "and attack (1) traces (for benign-only data use SRIGuard)")
        if centers_meta is not None:
            self._set_centers(centers_meta)
        self._fit_model(x, y)
        self.threshold_ = float(self.config.threshold)
        return self

    def decision_function(self, traces) -> np.ndarray:
        return self._forward(traces)

    def predict_proba(self, traces) -> np.ndarray:
        p = np.asarray(jax.nn.sigmoid(jnp.asarray(self.decision_function(traces),
                                                  jnp.float32))).astype(np.float64)
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, traces) -> np.ndarray:
        return self.predict_proba(traces)[:, 1] > self.threshold_

