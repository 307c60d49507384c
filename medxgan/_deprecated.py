"""Old import paths that keep working for one release (CHANGELOG, "Session 7").

A moved module leaves a stub at its old path whose module ``__getattr__`` is :func:`moved`:
every name read from the stub is looked up in the new modules, in order, and returned with a
``DeprecationWarning`` that names its new path. Nothing in this repository imports a stub
(``tests/test_deprecated_paths.py`` checks both).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any

#: The release that removes the old paths.
REMOVED_IN = "0.2.0"


def warn(old: str, new: str, stacklevel: int = 3) -> None:
    """The ``DeprecationWarning`` of a name read at its ``old`` path, now at ``new``."""
    warnings.warn(f"{old} is deprecated: use {new} (the old path goes in medxgan-audit "
                  f"{REMOVED_IN})", DeprecationWarning, stacklevel=stacklevel)


def moved(old: str, *new: str, renamed: dict[str, str] | None = None,
          extra: dict[str, tuple[Any, str]] | None = None) -> Callable[[str], Any]:
    """The module ``__getattr__`` of the stub at ``old``.

    Args:
        old: the old module's name.
        new: the modules its names now live in, searched in order.
        renamed: old name -> ``"module:new_name"`` for names that changed.
        extra: old name -> (an object kept only for old callers, e.g. a compatibility
            wrapper; what to use instead).
    """
    renamed = renamed or {}
    extra = extra or {}

    def __getattr__(name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        if name in extra:
            obj, instead = extra[name]
            warn(f"{old}.{name}", instead)
            return obj
        if name in renamed:
            mod, new_name = renamed[name].split(":")
            warn(f"{old}.{name}", f"{mod}.{new_name}")
            return getattr(importlib.import_module(mod), new_name)
        for mod in new:
            m = importlib.import_module(mod)
            if hasattr(m, name):
                obj = getattr(m, name)
                warn(f"{old}.{name}", f"{_home(obj, name, mod)}.{name}")
                return obj
        raise AttributeError(f"module {old!r} has no attribute {name!r}")

    return __getattr__


def _home(obj: Any, name: str, found_in: str) -> str:
    """The module that defines ``obj`` (so the warning names its canonical path), else the
    module it was found in."""
    where = getattr(obj, "__module__", None)
    if isinstance(where, str) and where.startswith("medxgan.") and \
            getattr(importlib.import_module(where), name, None) is obj:
        return where
    return found_in
