"""The documentation names only commands, flags, files and config keys that exist.

For README.md and every docs/*.md, in fenced code blocks and in inline code:

- every ``medxgan <subcommand>`` is a subcommand of the CLI (the parser of
  :func:`flows.cli.build_parser`) and every ``--flag`` after it is one of that subcommand's
  flags or a top-level one (``--debug``);
- every ``--flag`` after ``python -m bench.<name>`` is a flag of that benchmark (read from the
  module's source and the parent parsers of ``bench/_args.py`` it uses, without importing
  torch);
- a ``--flag`` in inline code that follows no command is a flag of some subcommand or
  benchmark (flags of other tools, pytest, prefect, pip, are never checked);
- every relative Markdown link points to an existing file and, for a link into a Markdown
  file, to an existing heading;
- YAML examples that are whole classifier specs, audit configs, ``criteria:`` lists or
  ``train-gan --config`` files validate against the pydantic models.
"""

from __future__ import annotations

import argparse
import functools
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Linked files that another step generates; allowed to be missing until they are committed.
GENERATED = {
    "docs/img/report-answers.png",  # the report screenshot, taken by a headless-Chromium test
}

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
_INLINE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FLAG = re.compile(r"^--[A-Za-z0-9][\w-]*")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?")
_SHELL = {"", "bash", "sh", "shell", "console", "zsh"}


# --- what exists ---------------------------------------------------------------------------

@functools.cache
def _cli() -> tuple[set[str], dict[str, set[str]]]:
    """(top-level flags, {subcommand: its flags}) of the ``medxgan`` parser."""
    from flows.cli import build_parser

    ap = build_parser()
    top = {o for a in ap._actions for o in a.option_strings}
    subs: dict[str, set[str]] = {}
    for a in ap._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, p in a.choices.items():
                subs[name] = {o for b in p._actions for o in b.option_strings}
    return top, subs


@functools.cache
def _bench_flags(name: str) -> set[str] | None:
    """Flags of ``python -m bench.<name>`` read from its source (None: no such module)."""
    path = ROOT / "bench" / f"{name}.py"
    if not path.exists():
        return None
    src = path.read_text()
    flags = set(re.findall(r"[\"'](--[A-Za-z0-9][\w-]*)[\"']", src)) | {"--help", "-h"}
    args = (ROOT / "bench" / "_args.py").read_text()
    for part in re.split(r"\ndef ", args)[1:]:
        fn = part.split("(", 1)[0]
        if f"{fn}(" in src:
            flags |= set(re.findall(r"[\"'](--[A-Za-z0-9][\w-]*)[\"']", part))
    return flags


@functools.cache
def _all_flags() -> set[str]:
    top, subs = _cli()
    out = set(top).union(*subs.values())
    for p in (ROOT / "bench").glob("*.py"):
        out |= _bench_flags(p.stem) or set()
    return out


# --- reading a document --------------------------------------------------------------------

def _split(text: str) -> tuple[list[tuple[str, int, str]], str]:
    """(fenced blocks as (language, first line number, body), the prose with blocks blanked)."""
    blocks, prose, lines = [], [], text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        fence, lang, start, body = m.group(1), m.group(2).lower(), i + 1, []
        prose.append("")
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            prose.append("")
            i += 1
        prose.append("")
        i += 1
        blocks.append((lang, start + 1, "\n".join(body)))
    return blocks, _COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), "\n".join(prose))


def _shell_commands(body: str) -> tuple[list[str], list[str]]:
    """(logical command lines without comments, heredoc bodies) of a shell block."""
    joined = re.sub(r"\\\n", " ", body)
    commands, heredocs, lines, i = [], [], joined.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        m = _HEREDOC.search(line)
        i += 1
        if m:
            end, doc = m.group(1), []
            while i < len(lines) and lines[i].strip() != end:
                doc.append(lines[i])
                i += 1
            i += 1
            heredocs.append("\n".join(doc))
        commands.append(re.sub(r"(^|\s)#.*$", "", line))
    return commands, heredocs


def _tokens(segment: str) -> list[str]:
    try:
        toks = shlex.split(segment, posix=True)
    except ValueError:
        toks = segment.split()
    return [t.strip("[]") for t in toks if t.strip("[]")]


def _segments(command: str) -> list[str]:
    return [s for s in re.split(r"\s(?:&&|\|\||\||&)\s|;|\s&$", command) if s.strip()]


def _check_tokens(toks: list[str], where: str, *, inline: bool) -> list[str]:
    """Problems with the medxgan / bench commands and flags of one command's tokens."""
    top, subs = _cli()
    problems: list[str] = []
    for i, t in enumerate(toks):
        cmd = None
        if t == "medxgan" or t.endswith("/medxgan") or (
                t == "flows.cli" and i and toks[i - 1] == "-m"):
            cmd, rest = "medxgan", toks[i + 1:]
        elif t.startswith("bench.") and i and toks[i - 1] == "-m":
            cmd, rest = t, toks[i + 1:]
        elif inline and i == 0 and t in subs:  # `ingest --source rsna` in prose
            cmd, rest = "medxgan", toks
        if cmd is None:
            continue
        if cmd == "medxgan":
            sub = next((r for r in rest if not r.startswith("-")), None)
            if sub is None:  # `medxgan` alone: the method's name, or the bare command
                return problems
            if sub not in subs:
                known = ", ".join(sorted(subs))
                return [*problems, f"{where}: `medxgan {sub}`: no such subcommand (known: {known})"]
            pos = rest.index(sub)
            for f in rest[:pos]:
                if _FLAG.match(f) and f.split("=")[0] not in top:
                    problems.append(f"{where}: `medxgan {f}`: unknown top-level flag")
            for f in rest[pos + 1:]:
                if _FLAG.match(f) and f.split("=")[0] not in subs[sub] | top:
                    problems.append(f"{where}: `medxgan {sub}`: unknown flag {f.split('=')[0]} "
                                    f"(known: {', '.join(sorted(subs[sub]))})")
        else:
            name = cmd.split(".", 1)[1]
            if not name.isidentifier():  # `python -m bench.<name>`
                return problems
            known = _bench_flags(name)
            if known is None:
                return [*problems, f"{where}: `python -m {cmd}`: no module bench/{name}.py"]
            for f in rest:
                if _FLAG.match(f) and f.split("=")[0] not in known:
                    problems.append(f"{where}: `python -m {cmd}`: unknown flag {f.split('=')[0]}")
        return problems
    if inline and toks and _FLAG.match(toks[0]):  # flags named on their own: `--runner dask`
        for f in toks:
            if _FLAG.match(f) and f.split("=")[0] not in _all_flags():
                problems.append(f"{where}: `{f}`: no medxgan subcommand or benchmark has this "
                                "flag")
    return problems


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _rel(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


# --- the checks ----------------------------------------------------------------------------

@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_commands_and_flags_exist(doc: Path):
    text = doc.read_text()
    blocks, prose = _split(text)
    problems: list[str] = []
    for lang, line, body in blocks:
        if lang not in _SHELL:
            continue
        commands, _ = _shell_commands(body)
        for command in commands:
            for seg in _segments(command):
                problems += _check_tokens(_tokens(seg), f"{_rel(doc)}:{line}+", inline=False)
    for m in _INLINE.finditer(prose):
        code = " ".join(m.group(2).split())
        problems += _check_tokens(_tokens(code), f"{_rel(doc)}:{_line_of(prose, m.start())}",
                                  inline=True)
    assert not problems, "commands or flags the CLI does not have:\n" + "\n".join(problems)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def _anchors(path: Path) -> set[str]:
    _, prose = _split(path.read_text())
    seen: dict[str, int] = {}
    out = set()
    for line in prose.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = _slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_relative_links_resolve(doc: Path):
    _, prose = _split(doc.read_text())
    prose = _INLINE.sub(lambda m: " " * len(m.group(0)), prose)
    problems = []
    for m in _LINK.finditer(prose):
        url = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", url, re.IGNORECASE):  # http:, https:, mailto:
            continue
        path, _, anchor = url.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        where = f"{_rel(doc)}:{_line_of(prose, m.start())}: ({url})"
        if not target.exists():
            rel = target.relative_to(ROOT) if target.is_relative_to(ROOT) else target
            if str(rel) not in GENERATED:
                problems.append(f"{where}: {rel} does not exist")
            continue
        if anchor and target.suffix == ".md" and anchor not in _anchors(target):
            problems.append(f"{where}: no heading with anchor #{anchor} in "
                            f"{target.relative_to(ROOT)}")
    assert not problems, "broken relative links:\n" + "\n".join(problems)


def _validate(doc: object, where: str) -> list[str]:
    from pydantic import ValidationError

    from medxgan.config import AuditConfig, Criterion, GanSection, error_line
    from medxgan.config.classifier import ClassifierSpec

    if not isinstance(doc, dict):
        return []
    try:
        if "kind" in doc:
            ClassifierSpec.model_validate(doc)
        elif {"name", "cohort", "classifier"} <= doc.keys():
            AuditConfig.model_validate(doc)
        elif set(doc) == {"criteria"}:
            for c in doc["criteria"]:
                Criterion.model_validate(c)
        elif doc and set(doc) <= {"model", "train"}:
            GanSection.model_validate(doc)
    except ValidationError as exc:
        return [f"{where}: {error_line(exc)}"]
    except ValueError as exc:  # a spec's own checks (finding not among the outputs, ...)
        return [f"{where}: {exc}"]
    return []


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_yaml_examples_validate(doc: Path):
    blocks, _ = _split(doc.read_text())
    problems = []
    for lang, line, body in blocks:
        texts = [body] if lang in ("yaml", "yml") else \
            _shell_commands(body)[1] if lang in _SHELL else []
        for text in texts:
            for k, d in enumerate(yaml.safe_load_all(text)):
                problems += _validate(d, f"{_rel(doc)}:{line}+ (document {k + 1})")
    assert not problems, "YAML examples that do not validate:\n" + "\n".join(problems)
