"""Jailbreak detectors on SRI traces: the one-class SRI Guard (autoencoder), a supervised
MLP baseline, and evaluation metrics."""

from .autoencoder import (MLP, CentersMismatchError, ClassifierConfig,
                          GuardConfig, SRIClassifier, SRIGuard, classifier_logits,
                          classifier_proba, count_params, guard_score, mlp_forward,
                          validate_traces)
from .metrics import evaluate_scores, refusal_with_guard, threshold_at_fpr, tpr_at_fpr

__all__ = ["MLP", "CentersMismatchError", "ClassifierConfig",
           "GuardConfig", "SRIClassifier", "SRIGuard", "classifier_logits",
           "classifier_proba", "count_params", "evaluate_scores", "guard_score", "mlp_forward",
           "refusal_with_guard", "threshold_at_fpr", "tpr_at_fpr", "validate_traces"]
from .baselines import (CallableGuard, ExternalGuard, LlamaGuard3, PerplexityFilter,
                        SelfExamination, TextDetector, as_detector, prompt_nll,
                        prompt_perplexity)
from .evaluate import EvalConfig, evaluate_guard
from .report import EvalReport

__all__ += ["CallableGuard", "EvalConfig", "EvalReport", "ExternalGuard", "TextDetector",
            "as_detector", "LlamaGuard3", "PerplexityFilter", "SelfExamination",
            "evaluate_guard", "prompt_nll", "prompt_perplexity"]
