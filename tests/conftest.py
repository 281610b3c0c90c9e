import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import gc

import pytest


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Each test module's compiled XLA programs and traced functions are dropped after it, so
    one long pytest process does not accumulate every program of the suite."""
    yield
    import jax

    jax.clear_caches()
    gc.collect()
