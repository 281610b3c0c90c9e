"""sri-jax: the command-line tool.

Exit codes: 0 success, 1 a run-time error (bad input file, mismatched centers, ...; the
message says what to fix), 2 a usage error (unknown flag, bad value, an option the model
does not use), reported before any model is loaded where the model is not needed to tell.
Options can also come from a TOML file (--config run.toml, before or after the command):
top-level keys apply to every command that has that option, a [calibrate]/[trace]/... table
to that command only and over the top level; flags on the command line win.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
import warnings
from pathlib import Path

from .commands.args import UsageError, load as _load  # noqa: F401 - cli._load: tests, scripts

# command -> module with HELP (and DESCRIPTION), add_arguments(parser) and run(args) -> exit code
COMMANDS = {"demo": "demo", "calibrate": "calibrate", "trace": "trace", "plot": "plot",
            "report": "report", "finetune": "finetune", "adapt-diffusion": "adapt_diffusion",
            "generate": "generate", "train-detector": "train_detector", "evaluate": "evaluate"}


def _command(name: str):
    import importlib

    return importlib.import_module(f".commands.{COMMANDS[name]}", __package__)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: "<prog>: error: <problem>; see <prog> --help"."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="sri-jax", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="TOML file with option values (also accepted after the "
                                     "command)")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        mod = _command(name)
        kw = {"description": mod.DESCRIPTION} if hasattr(mod, "DESCRIPTION") else {}
        mod.add_arguments(sub.add_parser(name, help=mod.HELP, **kw))
    for p in sub.choices.values():
        p.add_argument("--config", default=argparse.SUPPRESS,
                       help="TOML file with option values (see sri-jax --help)")
    return ap


def _subcommands(ap: argparse.ArgumentParser) -> dict:
    return next(a.choices for a in ap._actions  # noqa: SLF001 - argparse has no public API
                if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001


def _config_value(action: argparse.Action, value):
    """A TOML value checked as if it came from the command line (type, choices, flags)."""
    if action.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            raise argparse.ArgumentTypeError(f"got {value!r}; give true or false")
        return value
    if isinstance(value, (dict, list, bool)) and action.nargs is None:
        raise argparse.ArgumentTypeError(f"got {value!r}; give a single value")
    if action.type is not None:
        value = action.type(value if isinstance(value, str) else str(value))
    if action.choices is not None and value not in action.choices:
        raise argparse.ArgumentTypeError(f"got {value!r}; give one of "
                                         f"{', '.join(map(str, action.choices))}")
    return value


def _apply_config(ap: argparse.ArgumentParser, argv):
    """Defaults from ``--config FILE`` (given before or after the command): top-level keys
    go to every command that has the option (a key no command has is an error), a
    ``[command]`` table to that command (every key must be one of its options)."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config")
    pre, rest = first.parse_known_args(argv)
    if not pre.config:
        return
    where = f"--config {pre.config}"
    try:
        data = tomllib.loads(Path(pre.config).read_text(encoding="utf-8"))
    except OSError as e:
        ap.error(f"cannot read {where}: {e.strerror or e}; give an existing TOML file")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        ap.error(f"{where} is not valid TOML ({e}); fix the file (UTF-8, TOML syntax)")
    subs = _subcommands(ap)
    options = {name: {a.dest: a for a in sp._actions  # noqa: SLF001
                      if a.dest not in ("help", "config") and a.option_strings}
               for name, sp in subs.items()}
    top = {k.replace("-", "_"): v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    bad = sorted(k for k in tables if k not in subs)
    if bad:
        ap.error(f"{where}: [{bad[0]}] is not a command; tables are named after commands "
                 f"({', '.join(subs)})")
    bad = sorted(k for k in top if not any(k in o for o in options.values()))
    if bad:
        ap.error(f"{where}: {bad[0]} is not an option of any command; remove it or fix the "
                 "name (the --flag name, with - or _)")
    for name, table in tables.items():
        bad = sorted(k for k in table if k.replace("-", "_") not in options[name])
        if bad:
            ap.error(f"{where}: [{name}] {bad[0]} is not an option of {name}; remove it "
                     "or move it to a command that has it")
    cmd = next((a for a in rest if not a.startswith("-")), None)
    if cmd not in subs:
        return  # argparse reports the missing or unknown command
    known = options[cmd]
    values = {k: v for k, v in top.items() if k in known}
    values.update({k.replace("-", "_"): v for k, v in tables.get(cmd, {}).items()})
    for k, v in values.items():
        try:
            values[k] = _config_value(known[k], v)
        except argparse.ArgumentTypeError as e:
            ap.error(f"{where}: {k}: {e}")
    subs[cmd].set_defaults(**values)


def _check_utf8(argv) -> None:
    """Arguments that are not UTF-8 (Python keeps such bytes as lone surrogates)."""
    for i, a in enumerate(argv, 1):
        try:
            a.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"argument {i} ({os.fsencode(a)!r}) is not UTF-8 text; pass it "
                             "as UTF-8 (check the terminal's encoding, e.g. LANG=C.UTF-8)"
                             ) from None


def parse_args(argv) -> argparse.Namespace:
    """The parsed command line, ``--config`` defaults included (exits 2 on usage errors)."""
    ap = build_parser()
    _apply_config(ap, argv)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _check_utf8(argv)
    except UsageError as e:
        print(f"sri-jax: error: {e}", file=sys.stderr)
        return 2
    args = parse_args(argv)
    args.argv = argv[argv.index(args.command) + 1:]  # recorded as provenance by some commands
    try:
        with warnings.catch_warnings():  # warnings as one line each: "sri-jax CMD: warning: ..."
            warnings.showwarning = lambda message, *a, **k: print(
                f"sri-jax {args.command}: warning: {message}", file=sys.stderr)
            return _command(args.command).run(args)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except UsageError as e:
        print(f"sri-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, KeyError, NotImplementedError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"sri-jax {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
