from .signal import (Centers, centers_from_activations, cosine_distance,
                     internal_recovery_rate, sri_signal, sri_step)

__all__ = ["Centers", "centers_from_activations", "cosine_distance", "internal_recovery_rate",
           "sri_signal", "sri_step"]

try:  # the refusal judge
    from .judge import is_refusal  # noqa: F401
    __all__.append("is_refusal")
except ImportError:  # pragma: no cover
    pass
