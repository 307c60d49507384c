"""Choice of the gallery's best and worst cases."""

from __future__ import annotations

import pandas as pd

from medxgan.catalogue import higher_is_better


def select_gallery(
    scores: pd.DataFrame, method: str = "gradcam", metric: str = "relevance_mass", k: int = 3
) -> tuple[list[str], list[str]]:
    """The k best and k worst images of one method on one metric.

    "Best" follows the metric's direction in ``medxgan.catalogue`` (unknown metrics and
    shuffled controls: higher is better). Images with an undefined (NaN) value are
    skipped; ties are broken by ``image_id`` so the choice is deterministic. The two lists
    never share an image: with fewer than 2k scored images, the worst list takes what the
    best list left.

    Args:
        scores: long form ``image_id, method, metric, value``.

    Returns: (best_ids, worst_ids), best first in each list (worst_ids: worst first).
    """
    s = scores[(scores["method"] == method) & (scores["metric"] == metric)].dropna(subset=["value"])
    s = s.assign(image_id=s["image_id"].astype(str))
    s = s.sort_values("image_id", kind="stable").drop_duplicates("image_id")
    asc = higher_is_better(metric) is False
    ranked = s.sort_values(["value", "image_id"], ascending=[asc, True], kind="stable")["image_id"].tolist()
    best = ranked[:k]
    rest = [i for i in ranked if i not in set(best)]
    worst_first = sorted(rest, key=lambda i: ranked.index(i), reverse=True)[:k]
    return best, worst_first
