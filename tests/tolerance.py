"""Float tolerances shared by the tests, derived from magnitude and precision.

Two fp32 computations of the same quantity (the fused XLA program and a step-by-step oracle,
two batch shapes, HF transformers and our port) add the same terms in a different order: the
order depends on the fused program, the CPU's vector width and the XLA thread count. Each
accumulation then rounds differently by a few fp32 ulps (eps = 1.19e-7) of the LARGEST terms,
so the difference scales with the array's magnitude, not with each element's own value (an
element that is a small difference of large terms can be off by 100 % of itself). Hence:

    |actual - desired| <= FP32_REL * max|desired|         elementwise

FP32_REL = 2e-5 (~170 ulps): the largest deviation seen, 3.5e-5 on activations of magnitude
~20 (1.8e-6 of the scale, another x86-64 CPU), is 10x inside it, while any real bug (a wrong
token, mask, position, layer or weight) moves values by O(the scale).
"""

from __future__ import annotations

import numpy as np

FP32_REL = 2e-5


def assert_fp32_close(actual, desired, *, rel: float = FP32_REL, err_msg: str = ""):
    """``actual`` within ``rel`` times the largest ``|desired|`` of ``desired``, elementwise."""
    desired = np.asarray(desired, np.float64)
    actual = np.asarray(actual, np.float64)
    assert actual.shape == desired.shape, (actual.shape, desired.shape)
    scale = float(np.abs(desired).max()) if desired.size else 0.0
    assert scale > 0, "comparing against an all-zero array checks nothing"
    np.testing.assert_allclose(actual, desired, rtol=0, atol=rel * scale,
                               err_msg=f"{err_msg} (tolerance {rel:g} x max|desired| {scale:.3g})")

# sigma in (0, 1) from two fp32 runs of the same prompts whose phi agree to a relative r
# (another batch shape, sharding, process count or CPU): sigma = sigmoid(z / tau) with
# z = log d- - log d+; each cosine distance d moves by <~ 2r, so z by <~ 4r / min(d) and sigma
# by <~ z / (4 tau) = 10 r / min(d) at tau = 0.1. With r = 1.8e-6 (the largest phi deviation
# seen) and d >= 0.2 that is <= 1e-4. (sigma from the SAME phi in fp32 vs float64 needs only
# 1e-5, and the tests that can compare that way do.)
SIGMA_ATOL = 1e-4
