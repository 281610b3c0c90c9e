"""The package's layering (issue 17): the detector and the evaluation split recipe sit below
the workflow/commands layer, and the split recipe is declared once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "sri_jax"


def _imports(path: Path) -> set[str]:
    """Every sri_jax module a file imports (module level or inside functions), absolute."""
    pkg = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("sri_jax")}


@pytest.mark.parametrize("low", ["detector", "data", "sri"])
def test_low_layers_never_import_the_workflow_or_commands(low):
    """Before: detector/evaluate.py imported the split sizes from workflow and
    detector/baselines.py its resolve_dtype, while workflow imports detector.evaluate."""
    up = ("sri_jax.workflow", "sri_jax.commands", "sri_jax.cli", "sri_jax.reporting")
    bad = {str(f.relative_to(PKG)): sorted(m for m in _imports(f) if m.startswith(up))
           for f in (PKG / low).rglob("*.py")}
    assert {k: v for k, v in bad.items() if v} == {}


def test_safety_tune_holds_out_the_demo_guard_holdout_and_test_prompts():
    """The fine-tune's "eval" split (formerly a hard-coded calib of 256) is exactly the benign
    prompts after the demo's calibration and guard training: the demo's guard holdout and test
    prompts lie inside it, its calibration and guard training prompts outside."""
    from sri_jax.data.splits import (N_CALIB_HARMLESS, N_GUARD_HOLDOUT, N_GUARD_TRAIN, N_TEST,
                                     benign_splits, safety_tune_benign)

    _, demo = benign_splits(n_test=N_TEST)
    _, tune = safety_tune_benign(128)
    assert len(tune["calib"]) == 256 == N_CALIB_HARMLESS + N_GUARD_TRAIN
    held = set(tune["eval"].ids)
    assert set(demo["holdout"].ids) | set(demo["test"].ids) <= held
    assert not (set(demo["calib"].ids) | set(demo["train"].ids)) & held
    assert set(demo["calib"].ids) | set(demo["train"].ids) == set(tune["calib"].ids)
    assert N_GUARD_HOLDOUT + N_TEST <= 128


def test_cli_is_a_dispatch_table_over_the_command_modules():
    """Every command is a module of sri_jax.commands with add_arguments and run, listed in
    the order `sri-jax --help` has always shown; no command module imports the CLI back."""
    import importlib

    from sri_jax import cli

    assert list(cli.COMMANDS) == ["demo", "calibrate", "trace", "plot", "report", "finetune",
                                  "adapt-diffusion", "generate", "train-detector", "evaluate"]
    assert list(cli._subcommands(cli.build_parser())) == list(cli.COMMANDS)
    for name, mod in cli.COMMANDS.items():
        m = importlib.import_module(f"sri_jax.commands.{mod}")
        assert callable(m.add_arguments) and callable(m.run) and m.HELP, name
    back = {str(f.relative_to(PKG)): sorted(m for m in _imports(f) if m.startswith("sri_jax.cli"))
            for f in (PKG / "commands").glob("*.py")}
    assert {k: v for k, v in back.items() if v} == {}


def test_commands_see_their_own_arguments_as_given(monkeypatch):
    """``args.argv``: the flags after the command name, as typed (adapt-diffusion records
    them as the artifact's provenance)."""
    from sri_jax import cli
    from sri_jax.commands import adapt_diffusion

    seen = {}
    monkeypatch.setattr(adapt_diffusion, "run", lambda args: seen.setdefault("argv", args.argv)
                        and 0)
    argv = ["adapt-diffusion", "--rank", "8", "--lr", "2e-3", "--max-minutes", "5"]
    cli.main(argv)
    assert seen["argv"] == argv[1:]
