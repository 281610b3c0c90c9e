"""sri_jax: step-wise refusal internal dynamics (SRI) for AR and masked-diffusion LMs in JAX."""

from ._version import __version__

from .models.config import ModelConfig, RopeScaling
from .models.model import ForwardOutput, Model
from .parallel.mesh import make_mesh
from .sampling import GenerationResult, Prompting, Readout, SamplerConfig, generate
from .calibration import calibrate
from .sri.centers import load_centers, save_centers
from .sri.signal import Centers, internal_recovery_rate, sri_signal
from .tracing import TraceOptions, read_traces, trace


def load_model(source, *, dtype="bfloat16", **kwargs) -> Model:
    """Load a model from a directory (HF layout), a .gguf file, a registry name or a hub id.

    ``mesh=sri_jax.make_mesh(...)`` loads the parameters straight into their shards."""
    from .weights.loader import load_model as _load

    return _load(source, dtype=dtype, **kwargs)


def is_refusal(text: str) -> bool:
    """The paper's keyword refusal judge (31 phrases)."""
    from .judges.keyword import is_refusal as _judge

    return _judge(text)


def __getattr__(name):
    # The detector pulls in optax, orbax and scikit-learn: imported on first use only.
    if name == "SRIGuard":
        from .detector.autoencoder import SRIGuard

        return SRIGuard
    raise AttributeError(f"module 'sri_jax' has no attribute {name!r}")


__all__ = ["Centers", "ForwardOutput", "GenerationResult", "Model", "ModelConfig", "Prompting",
           "Readout", "RopeScaling", "SRIGuard", "SamplerConfig", "TraceOptions", "calibrate",
           "generate", "internal_recovery_rate", "is_refusal", "load_centers", "load_model",
           "make_mesh", "read_traces", "save_centers", "sri_signal", "trace", "__version__"]
