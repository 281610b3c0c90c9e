"""One centers fingerprint and one compatibility check, shared by runs, traces and detectors."""

from __future__ import annotations

import numpy as np
import pytest

from sri_jax.sampling import SamplerConfig
from sri_jax.sri.centers import CentersMismatchError, centers_fingerprint, check_match
from sri_jax.sri.signal import Centers


def test_check_match_lists_every_problem():
    mine = {"tau": 0.1, "layer": "last", "eps": 1e-8, "weight_hash": "a"}
    theirs = {"tau": 0.2, "layer": "last", "weight_hash": "b"}  # no eps recorded
    with pytest.raises(CentersMismatchError) as e:
        check_match(theirs, mine, "detector", what="the detector's", fix="Refit.",
                    problems=["T differs"], complete=True)
    assert str(e.value) == ("these centers do not match the detector's: T differs; "
                            "weight_hash: centers 'b' vs detector 'a'; tau: centers 0.2 vs "
                            "detector 0.1; eps: detector 1e-08, centers have none. Refit.")
    with pytest.raises(CentersMismatchError) as e:  # skipped fields and partial records
        check_match(theirs, mine, "run", what="this run", fix="Fix.", skip=("weight_hash",))
    assert str(e.value) == "these centers do not match this run: tau: centers 0.2 vs run 0.1. Fix."
    check_match({"tau": 0.1}, mine, "run", what="this run", fix="")  # agreeing: no error


def test_trace_plan_binds_to_the_center_arrays(tmp_path):
    """Centers with the same metadata and the same element sum but different arrays are a
    different trace run (the plan once hashed only the sum)."""
    from tiny_model import tiny_chat_model

    from sri_jax.tracing import TraceOptions, trace

    model = tiny_chat_model(seed=0)
    cfg = SamplerConfig.autoregressive(gen_length=3)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(cfg.steps, model.config.hidden_size)).astype(np.float32)
    b = rng.normal(size=a.shape).astype(np.float32)
    c1 = Centers(a, b, {})
    c2 = Centers(a[::-1].copy(), b, {})  # rows swapped: same sum, same meta
    assert centers_fingerprint(c1) != centers_fingerprint(c2)
    assert centers_fingerprint(c1) == centers_fingerprint(Centers(a.astype(np.float64), b, {}))
    kw = dict(out_dir=tmp_path / "t", judge=lambda t: False,
              options=TraceOptions(progress=False))
    trace(model, ["write a poem"], cfg, centers=c1, **kw)
    trace(model, ["write a poem"], cfg, centers=c1, **kw)  # the same run resumes
    with pytest.raises(ValueError, match=r"different trace run \(differs in \['centers'\]\)"):
        trace(model, ["write a poem"], cfg, centers=c2, **kw)
