"""Tie-aware ranking helpers shared by the metrics (batched over rows).

Every function works on a float tensor (B, N): B independent rows of N values.
"""

from __future__ import annotations

import torch


def _tie_groups(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last position of each element's tie group in sorted rows.

    Args:
        s: (B, N) rows sorted (ascending or descending).

    Returns:
        start, end: (B, N) int64; for position i, the first and last positions (inclusive)
        of the run of values equal to ``s[:, i]``.
    """
    B, N = s.shape
    pos = torch.arange(N, device=s.device, dtype=torch.int32).expand(B, N)  # (B, N)
    new = torch.ones_like(s, dtype=torch.bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]  # (B, N) a group starts here
    if bool(new.all()):  # no ties at all: every group is one element
        p = pos.long()
        return p, p
    last = torch.ones_like(s, dtype=torch.bool)
    last[:, :-1] = new[:, 1:]  # (B, N) a group ends here
    start = torch.cummax(torch.where(new, pos, 0), dim=1).values.long()
    end = torch.cummin(torch.where(last, pos, N - 1).flip(1), dim=1).values.flip(1).long()
    return start, end


def average_ranks(a: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N of each row, ties given the average of their ranks (scipy 'average').

    Args:
        a: (B, N) float.

    Returns:
        (B, N) float64 ranks in the original order.
    """
    s, idx = torch.sort(a, dim=1, stable=True)  # (B, N)
    start, end = _tie_groups(s)
    r = (start + end).to(torch.float64) / 2 + 1  # (B, N) in sorted order
    return torch.empty_like(r).scatter_(1, idx, r)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of matching rows, tie-aware (Pearson of average ranks).

    Args:
        a, b: (B, N) float.

    Returns:
        (B,) float64; NaN where either row is constant (correlation undefined).
    """
    ra = average_ranks(a.reshape(a.shape[0], -1))
    rb = average_ranks(b.reshape(b.shape[0], -1))
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    den = torch.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    rho = (ra * rb).sum(1) / den
    return torch.where(den > 0, rho, torch.full_like(rho, float("nan")))
