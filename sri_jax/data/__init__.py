"""Prompt sets (offline from pinned PyPI wheels, online from the HF hub, local files), deterministic
splits, and jailbreak transforms.

>>> from sri_jax.data import load_prompt_set, split, apply_attack
>>> harmful = load_prompt_set("advbench")
>>> attacked = apply_attack("refusal_suppression", harmful.head(100))
"""

from .attacks import (
    ATTACKS,
    DEFAULT_RS_SUFFIX,
    FLIP_MODES,
    AttackedPrompt,
    AttackResources,
    apply_attack,
    attack_prompt_set,
    fill_template,
    flip_attack,
    flip_text,
    gcg_suffix,
    identity,
    inthewild_wrap,
    random_search_template,
    refusal_suppression,
    template_wrap,
    unflip_text,
)
from .sets import (
    PROMPT_SETS,
    PROMPT_SLOT,
    PromptSet,
    PromptSetError,
    PromptSetUnavailableError,
    SetSpec,
    clear_cache,
    content_hash,
    list_prompt_sets,
    load_prompt_set,
    split,
)
from ..fetch import WheelError, cache_dir, fetch_wheel, read_wheel_member

__all__ = [
    "ATTACKS", "DEFAULT_RS_SUFFIX", "FLIP_MODES", "AttackedPrompt", "AttackResources", "apply_attack",
    "attack_prompt_set", "fill_template", "flip_attack", "flip_text", "gcg_suffix", "identity",
    "inthewild_wrap", "random_search_template", "refusal_suppression", "template_wrap", "unflip_text",
    "PROMPT_SETS", "PROMPT_SLOT", "PromptSet", "PromptSetError", "PromptSetUnavailableError", "SetSpec",
    "clear_cache", "content_hash", "list_prompt_sets", "load_prompt_set", "split",
    "WheelError", "cache_dir", "fetch_wheel", "read_wheel_member",
]
