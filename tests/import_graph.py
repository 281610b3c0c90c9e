"""The import graph of the sri_jax package, read from the source (``ast``; nothing is imported).

Every ``import`` counts, at module level or inside a function: a lazy import is still a
dependency. ``python tests/import_graph.py`` prints the cycles and the upward imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sri_jax"

# Layers, lowest first (the target of issue 17): a module imports only from its own layer or
# below. A module is placed by its longest matching dotted prefix.
LAYERS = [
    ("sri_jax._version",),
    ("sri_jax.artifacts", "sri_jax.fetch"),
    ("sri_jax.data", "sri_jax.judges.keyword"),
    ("sri_jax.models", "sri_jax.parallel"),
    ("sri_jax.weights",),
    ("sri_jax.sri",),
    ("sri_jax.sampling",),
    ("sri_jax.tracing", "sri_jax.calibration", "sri_jax.reporting", "sri_jax.judges",
     "sri_jax.gcg", "sri_jax.comparison"),
    ("sri_jax.detector",),
    ("sri_jax.commands", "sri_jax.finetune", "sri_jax.diffusion_adapt"),
    ("sri_jax.cli", "sri_jax"),
]


def modules(root: Path = PACKAGE) -> dict[str, tuple[Path, list[str]]]:
    """dotted name -> (file, the package its relative imports start from)."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
            pkg = parts
        else:
            pkg = parts[:-1]
        out[".".join(parts)] = (f, pkg)
    return out


def edges(mods: dict) -> dict[str, set[str]]:
    """module -> the sri_jax modules it imports (``from x import y``: y when y is a module)."""
    graph = {}
    for name, (f, pkg) in mods.items():
        out = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom):
                base = pkg[: len(pkg) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                if target.split(".")[0] != "sri_jax":
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    out.add(sub if sub in mods else target)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.split(".")[0] == "sri_jax")
        out.discard(name)
        graph[name] = {m for m in out if m in mods}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def layer(name: str) -> int:
    best, rank = -1, None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    return rank


def upward(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where the imported module sits in a higher layer."""
    return sorted((a, b) for a, bs in graph.items() for b in bs if layer(b) > layer(a))


if __name__ == "__main__":
    g = edges(modules())
    for c in cycles(g):
        print("cycle:", " <-> ".join(c))
    for a, b in upward(g):
        print(f"upward: {a} -> {b}")
