"""Finding names across datasets and classifiers (torch-free).

A classifier's output names (TorchXRayVision's ``pathologies``, CheXNet's 14 NIH labels, a
user's ``outputs:`` list) and a cohort's finding (RSNA's ``Lung Opacity``, NIH's
``Effusion``) spell the same finding in different ways. :func:`match_finding` picks the output
column of a finding:

1. an exact match after normalisation (case, ``_``/``-``/``/`` and repeated spaces ignored:
   ``Pleural_Effusion`` == ``pleural effusion``);
2. otherwise a synonym from :data:`SYNONYMS` (RSNA ``Lung Opacity`` / ``pneumonia`` ->
   ``Pneumonia``; NIH ``Effusion`` <-> ``Pleural Effusion``; ``Infiltration`` <->
   ``Infiltrate``); an exact name always wins over a synonym (TorchXRayVision has both
   ``Pneumonia`` and ``Lung Opacity``).

No match, or several synonym matches, is a one-line :class:`FindingError`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: Groups of names that denote the same finding (NIH ChestX-ray14, RSNA Pneumonia, CheXpert,
#: PadChest / TorchXRayVision spellings). Each group is written normalised (:func:`normalise`).
SYNONYMS: tuple[frozenset[str], ...] = tuple(frozenset(g) for g in (
    {"pneumonia", "lung opacity", "opacity"},                      # RSNA's positive class
    {"effusion", "pleural effusion"},                              # NIH <-> CheXpert
    {"infiltration", "infiltrate", "infiltrates"},                 # NIH <-> others
    {"pleural thickening", "pleural thickening apical"},
    {"edema", "oedema", "pulmonary edema"},
    {"cardiomegaly", "enlarged heart"},
    {"pneumothorax", "ptx"},
    {"atelectasis", "atelectases"},
    {"consolidation", "consolidations"},
    {"nodule", "nodules", "lung nodule"},
    {"mass", "masses", "lung mass"},
    {"fracture", "fractures", "rib fracture"},
    {"no finding", "normal", "healthy"},
))


class FindingError(ValueError):
    """A finding that no output name matches, or matches ambiguously (one-line message)."""


def normalise(name: str) -> str:
    """Lower case, ``_``, ``-`` and ``/`` as spaces, single spaces: ``Pleural_Effusion`` ->
    ``pleural effusion``."""
    return " ".join(re.sub(r"[_\-/]+", " ", str(name)).lower().split())


def synonyms(name: str) -> frozenset[str]:
    """Every normalised name that denotes the same finding as ``name`` (itself included)."""
    n = normalise(name)
    out = {n}
    for group in SYNONYMS:
        if n in group:
            out |= group
    return frozenset(out)


def match_finding(finding: str, names: Sequence[str]) -> int:
    """Index of ``finding`` among the output ``names`` (exact match first, then synonyms).

    Raises:
        FindingError: no name matches, or several names match only as synonyms.
    """
    norm = [normalise(n) for n in names]
    want = normalise(finding)
    exact = [i for i, n in enumerate(norm) if n and n == want]
    if exact:
        return exact[0]
    syn = synonyms(finding)
    hits = [i for i, n in enumerate(norm) if n and n in syn]
    if len(hits) == 1:
        return hits[0]
    shown = ", ".join(repr(n) for n in names if n)
    if not hits:
        raise FindingError(f"finding {finding!r} is not among the classifier's outputs "
                           f"[{shown}] (synonyms tried: {', '.join(sorted(syn))}); set "
                           "'finding' to one of them or 'positive_index'")
    raise FindingError(f"finding {finding!r} matches several outputs "
                       f"({', '.join(repr(names[i]) for i in hits)}); name one exactly or set "
                       "'positive_index'")
