"""The package's functions stay small: none longer than 60 lines, none taking more than about
10 parameters (more travel together in a config object). The most is 11: the fused samplers'
seven inputs plus their reads, step function, test noise and infill template
(``sampling.diffusion.diffusion_sample``). Read from the source with ``ast``."""

from __future__ import annotations

import ast

from import_graph import PACKAGE

MAX_LINES, MAX_PARAMS = 60, 11


def functions(root=PACKAGE):
    """(file:line name, lines, parameters) of every function and method under ``root``;
    ``self``/``cls`` are not counted."""
    for f in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
                n = len(names) - (1 if names and names[0] in ("self", "cls") else 0)
                yield (f"{f.relative_to(root.parent)}:{node.lineno} {node.name}",
                       node.end_lineno - node.lineno + 1, n)


def test_no_function_is_long_or_takes_many_parameters():
    long = [(w, n) for w, n, _ in functions() if n > MAX_LINES]
    wide = [(w, p) for w, _, p in functions() if p > MAX_PARAMS]
    assert long == [] and wide == [], {f"longer than {MAX_LINES} lines": long,
                                       f"more than {MAX_PARAMS} parameters": wide}


def test_the_reader_counts_lines_and_parameters(tmp_path):
    pkg = tmp_path / "sri_jax"
    pkg.mkdir()
    (pkg / "m.py").write_text("class C:\n    def f(self, a, *, b=1):\n        return a\n\n"
                              "def g(x, y, *args, z, **kw):\n    '''doc'''\n\n    return 1\n")
    assert sorted(functions(pkg)) == [("sri_jax/m.py:2 f", 2, 2), ("sri_jax/m.py:5 g", 4, 3)]
