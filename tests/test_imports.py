"""The package's import graph (read from the source, tests/import_graph.py) and its runtime
dependencies.

Cycles and upward imports that remain are listed here with the part of the package that owns
them; the test fails on any new one, and an entry is deleted when its owner removes it."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import tomllib
from pathlib import Path

from import_graph import PACKAGE, cycles, edges, layer, modules, upward

KNOWN_CYCLES: list = []
KNOWN_UPWARD: set = set()
# The bottom of the package: nothing here may import upward or take part in a cycle.
FOUNDATION = ("sri_jax._version", "sri_jax.artifacts", "sri_jax.fetch", "sri_jax.data",
              "sri_jax.models", "sri_jax.weights")


def test_no_new_cycle_or_upward_import():
    graph = edges(modules())
    assert all(layer(m) is not None for m in graph), [m for m in graph if layer(m) is None]
    found = cycles(graph)
    assert all(set(c) in KNOWN_CYCLES for c in found), found
    assert set(upward(graph)) <= KNOWN_UPWARD, sorted(set(upward(graph)) - KNOWN_UPWARD)
    in_cycles = {m for c in found for m in c}
    for m, targets in graph.items():
        if m.startswith(FOUNDATION):
            assert m not in in_cycles
            assert all(layer(t) <= layer(m) for t in targets), (m, targets)
    # no module reaches for the package root (the public facade is for users)
    assert sorted(m for m, t in graph.items() if "sri_jax" in t) == []


def test_graph_reader_on_a_planted_package(tmp_path):
    pkg = tmp_path / "sri_jax"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import x\n")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from .. import a\nimport os\nfrom sri_jax.sub import c\n")
    (pkg / "sub" / "c.py").write_text("")
    g = edges(modules(pkg))
    assert g == {"sri_jax": {"sri_jax.a"}, "sri_jax.a": {"sri_jax.sub.b"},
                 "sri_jax.sub": set(), "sri_jax.sub.b": {"sri_jax.a", "sri_jax.sub.c"},
                 "sri_jax.sub.c": set()}
    assert cycles(g) == [["sri_jax.a", "sri_jax.sub.b"]]


IMPORT_NAMES = {"scikit-learn": "sklearn", "pyyaml": "yaml", "huggingface-hub": "huggingface_hub",
                "orbax-checkpoint": "orbax"}
# used at run time through a package we import, behind one of its optional extras
USED_THROUGH = {"jinja2": "transformers' apply_chat_template renders every chat template"}


def test_every_runtime_dependency_is_imported():
    """The runtime install (dependencies + the gguf extra) holds no package the library does
    not import, or that a package it imports does not need (tokenizers: transformers)."""
    meta = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=\[ ;]", d, maxsplit=1)[0] for d in meta["dependencies"]]
    imported = set()
    for f in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    needed_by_deps = {re.split(r"[<>=\[ ;!~]", r, maxsplit=1)[0].lower()
                      for r in md.requires("transformers") or [] if "extra ==" not in r}
    unused = [n for n in names if IMPORT_NAMES.get(n.lower(), n.replace("-", "_")) not in imported
              and n.lower() not in needed_by_deps and n.lower() not in USED_THROUGH]
    assert unused == [], unused
    # the GGUF tokenizer is built from the file's metadata: the demo install has no PyTorch
    assert meta["optional-dependencies"]["gguf"] == []
