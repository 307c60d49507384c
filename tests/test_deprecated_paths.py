"""The module paths that moved in issue #21 (CHANGELOG, "Session 7") keep working for one release:
every name read at an old path is the object at its new path, with a ``DeprecationWarning`` that
names the new path; nothing in the repository imports an old path itself."""

from __future__ import annotations

import ast
import importlib
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: old module -> (a name users imported from it, the module it lives in now)
OLD = {
    "medxgan.models.checkpoints": ("content_hash", "medxgan.checkpoints"),
    "medxgan.models.classifier": ("load_classifier", "medxgan.classifiers.load"),
    "medxgan.models.classifier_kinds": ("ONNX2TORCH_OPSET", "medxgan.classifiers.kinds"),
    "medxgan.models.check": ("check_classifier", "medxgan.classifiers.check"),
    "medxgan.models.small_cnn": ("SmallCNN", "medxgan.classifiers.small_cnn"),
    "medxgan.models.train_classifier": ("train_classifier", "medxgan.classifiers.train"),
    "medxgan.models.gan": ("Generator", "medxgan.generators.published.gan"),
    "medxgan.models.train_gan": ("load_generator", "medxgan.generators.stage"),
    "medxgan.models.encoder": ("Encoder", "medxgan.generators.published.encoder"),
    "medxgan.models.health": ("counterfactual_health", "medxgan.generators.health"),
    "medxgan.models.inpaint": ("InpaintGenerator", "medxgan.generators.inpaint.inpainter"),
    "medxgan.models.amortised": ("MaskNet", "medxgan.generators.inpaint.amortised"),
    "medxgan.models.residual": ("ResidualGenerator", "medxgan.generators.residual.vagan"),
    "medxgan.models.inpaint_run": ("end_of_run_health", "medxgan.generators.image_run"),
    "medxgan.explain.counterfactual_search": ("search_counterfactual",
                                              "medxgan.generators.inpaint.search"),
    "medxgan.explain.inversion": ("invert", "medxgan.generators.published.inversion"),
    "medxgan.explain": ("invert", "medxgan.generators.published.inversion"),
}


@pytest.mark.parametrize("old", sorted(OLD))
def test_an_old_path_still_imports_and_warns(old):
    name, new = OLD[old]
    mod = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=f"{old}.{name} is deprecated: use {new}.{name}"):
        got = getattr(mod, name)
    assert got is getattr(importlib.import_module(new), name)


def test_from_imports_of_old_paths_keep_working():
    with pytest.warns(DeprecationWarning, match="medxgan.generators.run.REQUIRED"):
        from medxgan.models.train_gan import _REQUIRED      # renamed private names too
    with pytest.warns(DeprecationWarning, match="medxgan.generators.published.train"):
        from medxgan.models.train_gan import _for_classifier, new_state  # noqa: F401
    with pytest.warns(DeprecationWarning, match="medxgan.config.classifier.ClassifierSpec"):
        from medxgan.models.classifier import ClassifierSpec
    with pytest.warns(DeprecationWarning, match="medxgan.generators.base.SearchResult"):
        from medxgan.explain.counterfactual_search import SearchResult
    with pytest.warns(DeprecationWarning, match="medxgan.generators.registry.names"):
        from medxgan.models.inpaint_run import FAMILIES
    from medxgan.config.classifier import ClassifierSpec as Spec
    from medxgan.generators.base import SearchResult as SR
    assert _REQUIRED == ("step", "generator", "gan_config") and ClassifierSpec is Spec
    assert SearchResult is SR and FAMILIES == ("inpaint", "residual")
    with pytest.raises(ImportError):
        from medxgan.models.gan import no_such_name  # noqa: F401


def test_the_current_paths_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from medxgan.classifiers import load_classifier  # noqa: F401
        from medxgan.explain import explain_batch, make_explainer  # noqa: F401
        from medxgan.generators import family, load_generator, train_gan  # noqa: F401


def _stubs() -> set[str]:
    """The modules that are deprecation stubs (their module ``__getattr__`` is ``moved``)."""
    out = set()
    for p in (ROOT / "medxgan").rglob("*.py"):
        if "__getattr__ = moved(" in p.read_text():
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            out.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def test_nothing_in_the_repository_imports_an_old_path():
    stubs = _stubs() - {"medxgan.explain"}       # a package face that still serves new names
    assert {m for m in OLD if m != "medxgan.explain"} <= stubs
    inversion = {"InversionConfig", "InversionResult", "invert"}  # medxgan.explain's old names
    hits = []
    for folder in ("medxgan", "flows", "tasks", "bench", "tests"):
        for p in sorted((ROOT / folder).rglob("*.py")):
            if p.name == Path(__file__).name:
                continue
            for node in ast.walk(ast.parse(p.read_text(), str(p))):
                if isinstance(node, ast.Import):
                    used = [a.name for a in node.names if a.name in stubs]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    used = [node.module] if node.module in stubs else []
                    used += [f"{node.module}.{a.name}" for a in node.names
                             if f"{node.module}.{a.name}" in stubs
                             or (node.module == "medxgan.explain" and a.name in inversion)]
                else:
                    continue
                hits += [f"{p.relative_to(ROOT)}:{node.lineno}: {u}" for u in used]
    assert not hits, "old import paths used in the repository:\n" + "\n".join(hits)
