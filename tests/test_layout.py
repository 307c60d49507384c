"""The package layout keeps its two rules (docs/design.md, "Layout" and "Generator families as
plug-ins"):

- no import circle among the ``medxgan.*`` modules, nor among the ``flows.*`` modules. Every
  import counts: at module level, inside functions (lazy imports), under ``if TYPE_CHECKING``;
  ``from pkg import name`` counts as an import of ``pkg.name`` when that is a module, else of
  ``pkg``; a package's ``__init__`` is a module like any other (importing ``a.b`` is not
  counted as importing ``a``);
- no branch on the generator family outside ``medxgan/generators/``: no comparison of a
  ``family`` (a name, attribute, subscript or ``.get("family")``) with a family name, no
  membership test of one in a collection of family names, no use of ``image_conditioned``.
  The registry (:mod:`medxgan.generators.registry`) is the one place that maps a family to
  its code.

Run as a script it prints the circles it finds (``python tests/test_layout.py``).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"published", "inpaint", "residual"}   # the names gan.model.family takes
FAMILY_HOME = "medxgan/generators/"               # the only place that may branch on them
BRANCH_DIRS = ("medxgan", "flows", "tasks", "bench")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules(package: str) -> dict[str, Path]:
    """{dotted module name: file} of every module of a top-level package of the repository."""
    return {_module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def _imported(tree: ast.AST, me: str, is_pkg: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that the module ``me`` imports anywhere in its source."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                name = a.name
                while name and name not in known:      # import a.b.c of a non-module c
                    name = name.rpartition(".")[0]
                if name:
                    out.add(name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y / from .. import z
                base = me if is_pkg else me.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            for a in node.names:
                sub = f"{mod}.{a.name}"
                if sub in known:
                    out.add(sub)
                elif mod in known:
                    out.add(mod)
    out.discard(me)
    return out


def import_graph(package: str) -> dict[str, set[str]]:
    """{module: the modules of the same package it imports} (every import, see the docstring)."""
    mods = modules(package)
    known = set(mods)
    return {m: _imported(ast.parse(p.read_text(), str(p)), m, p.name == "__init__.py", known)
            for m, p in mods.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _describe(graph: dict[str, set[str]], comp: list[str]) -> str:
    inside = set(comp)
    return "; ".join(f"{a} -> {b}" for a in comp for b in sorted(graph[a] & inside))


# --- family branches --------------------------------------------------------------------------

def _mentions_family(node: ast.AST) -> bool:
    """A ``family`` value: a name / attribute ending in ``family``, ``x["family"]`` or
    ``x.get("family", ...)``."""
    if isinstance(node, ast.Name):
        return node.id == "family" or node.id.endswith("_family")
    if isinstance(node, ast.Attribute):
        return node.attr == "family" or node.attr.endswith("_family")
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "family"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
            node.func.attr == "get" and node.args:
        a = node.args[0]
        return isinstance(a, ast.Constant) and a.value == "family"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id == "getattr" and len(node.args) >= 2:   # getattr(G, "family", None)
        a = node.args[1]
        return isinstance(a, ast.Constant) and a.value == "family"
    return False


def _family_names(node: ast.AST) -> bool:
    """A family name, or a literal collection holding one."""
    if isinstance(node, ast.Constant):
        return node.value in FAMILIES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_family_names(e) for e in node.elts)
    if isinstance(node, ast.Dict):  # {"inpaint": ...}[family] / .get(family)
        return any(k is not None and _family_names(k) for k in node.keys)
    return False


def family_branches(path: Path) -> list[str]:
    """``line: source`` of every branch on the generator family in one file."""
    src = path.read_text()
    tree = ast.parse(src, str(path))
    lines = src.splitlines()
    hits: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_mentions_family(s) for s in sides) and any(_family_names(s) for s in sides):
                hits.append(node.lineno)
        elif isinstance(node, ast.Subscript) and _family_names(node.value) and \
                _mentions_family(node.slice):              # {"inpaint": a}[family]
            hits.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr == "get" and _family_names(node.func.value) and node.args and \
                _mentions_family(node.args[0]):            # {"inpaint": a}.get(family)
            hits.append(node.lineno)
        elif isinstance(node, ast.Attribute) and node.attr == "image_conditioned":
            hits.append(node.lineno)
        elif isinstance(node, ast.Constant) and node.value == "image_conditioned":
            hits.append(node.lineno)                       # getattr(G, "image_conditioned")
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "image_conditioned" for t in targets):
                hits.append(node.lineno)
    rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    return [f"{rel}:{n}: {lines[n - 1].strip()}" for n in sorted(set(hits))]


def branch_files() -> list[Path]:
    return [p for d in BRANCH_DIRS for p in sorted((ROOT / d).rglob("*.py"))
            if not p.relative_to(ROOT).as_posix().startswith(FAMILY_HOME)]


# --- tests -------------------------------------------------------------------------------------

def test_no_import_circle_in_medxgan():
    g = import_graph("medxgan")
    assert len(g) > 50  # the package was found
    found = circles(g)
    assert not found, "import circles in medxgan/:\n" + "\n".join(
        _describe(g, c) for c in found)


def test_no_import_circle_in_flows():
    g = import_graph("flows")
    found = circles(g)
    assert not found, "import circles in flows/:\n" + "\n".join(_describe(g, c) for c in found)


def test_no_branch_on_the_generator_family_outside_the_registry():
    hits = [h for p in branch_files() for h in family_branches(p)]
    assert not hits, ("branches on the generator family outside medxgan/generators/ (ask the "
                      "registry, medxgan.generators.registry.family_of(...), instead):\n"
                      + "\n".join(hits))


def test_the_checks_see_what_they_forbid(tmp_path):
    """The cycle finder and the branch finder are not vacuous."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    f = tmp_path / "probe.py"
    code = ("def g(G, gc, obj, f):\n"
            "    if gc.family == 'inpaint': pass\n"
            "    if obj.get('family') in ('inpaint', 'residual'): pass\n"
            "    if getattr(G, 'image_conditioned', False): pass\n"
            "    label = {'inpaint': 'x'}.get(gc.family)\n"
            "    if f.family == 'floor': pass\n"     # a method family: not a generator's
            "    if getattr(G, 'family', None) == 'inpaint': pass\n")
    f.write_text(code)
    assert [h.split(":")[1] for h in family_branches(f)] == ["2", "3", "4", "5", "7"]


if __name__ == "__main__":
    for pkg in ("medxgan", "flows"):
        g = import_graph(pkg)
        found = circles(g)
        print(f"{pkg}: {len(g)} modules, {sum(map(len, g.values()))} import edges, "
              f"{len(found)} circle(s)")
        for c in found:
            print(f"  {' <-> '.join(c)}: {_describe(g, c)}")
    hits = [h for p in branch_files() for h in family_branches(p)]
    print(f"family branches outside {FAMILY_HOME}: {len(hits)}")
    for h in hits:
        print("  " + h)
