from .signal import (Centers, centers_from_activations, cosine_distance,
                     internal_recovery_rate, sri_signal, sri_step)

__all__ = ["Centers", "centers_from_activations", "cosine_distance", "internal_recovery_rate",
           "sri_signal", "sri_step"]
