from .api import GenerationResult, generate
from .config import SamplerConfig

__all__ = ["GenerationResult", "SamplerConfig", "generate"]
