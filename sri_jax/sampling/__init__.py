from .api import GenerationResult, Prompting, Readout, generate
from .config import SamplerConfig

__all__ = ["GenerationResult", "Prompting", "Readout", "SamplerConfig", "generate"]
