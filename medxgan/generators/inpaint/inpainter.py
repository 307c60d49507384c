"""Healthy-anatomy inpainter: a small U-Net that fills holes with what a negative image shows.

The counterfactual of a positive image is then the inpainting of the smallest region whose
in-filling makes the classifier call it negative (:mod:`medxgan.generators.inpaint.search`).
This is FIDO's generative in-filling (Chang et al., "Explaining image classifiers by
counterfactual generation", ICLR 2019) with an in-filler trained only on images the audited
classifier calls negative, so that what it draws is healthy anatomy, and it is the measured lead
of the prototype in ``docs/findings.md`` ("Image-conditioned prototypes": base 8, L1 in the hole +
0.1 L1 outside, holes of 1-3 ellipses / rectangles of 4-20 px at 64 px).

Public surface:

- :class:`Inpainter`: ``x_fill = inpainter(x, m)``; only the hole (m = 1) is replaced.
- :func:`sample_masks`: random holes of the finding's size range, optionally centred by a prior
  of where findings can occur.
- :func:`inpaint_loss`: the training loss (L1 in and out of the hole).
- :func:`train_inpainter`: a plain, seeded training loop -> ``(Inpainter, stats)``.
- :func:`save_inpainter` / :func:`load_inpainter`: state_dict + resolved config.
- :class:`InpaintGenerator`: the ``inpaint`` generator family as the explainers see it (an
  in-filler + the counterfactual search's options); trained and loaded by its family
  (:mod:`medxgan.generators.inpaint.family`) through ``train_gan`` / ``load_generator``.

The U-Net trunk and the training-loop helpers are :mod:`medxgan.generators.unet`.

Pixel conventions: images (B, 1, H, W) float in [0, 1]; masks (B, 1, H, W) with 1 = hole (to be
filled) and 0 = kept; pixel (i, j) has its centre at (j + 0.5, i + 0.5) in (x, y) pixel units.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from medxgan.config.inpaint import AmortiseConfig, InpaintConfig, SearchConfig
from medxgan.cpu import cpu_batch
from medxgan.generators.base import SearchResult
from medxgan.generators.inpaint.amortised import amortised_counterfactual
from medxgan.generators.inpaint.search import search_counterfactual
from medxgan.generators.inpaint.start import gradcam_counterfactual
from medxgan.generators.unet import UNet, budget_spent, device, draw_batch, spent_share

__all__ = ["InpaintConfig", "InpaintGenerator", "Inpainter", "UNet", "inpaint_loss",
           "load_inpainter", "sample_masks", "save_inpainter", "train_inpainter"]


class Inpainter(UNet):
    """U-Net in-filler: inputs x ⊙ (1 − m) and m, output replaces only the hole.

    A :class:`UNet` on the two channels (x ⊙ (1 − m), m) and a sigmoid give ``raw`` in
    [0, 1]; the composite is ``x_fill = x ⊙ (1 − m) + raw ⊙ m``, so pixels outside the hole
    are returned unchanged (bit for bit where m is exactly 0) and the hole's content never
    reaches the network.

    Args:
        base: channels of the first level (8: 122 k parameters at depth 3).
        depth: number of 2x down-samplings; H and W must be divisible by ``2**depth``.
    """

    def __init__(self, base: int = 8, depth: int = 3):
        super().__init__(2, base, depth)

    def raw(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """The network's whole-image guess (B, 1, H, W) in [0, 1] from x (B, 1, H, W) in [0, 1]
        and the hole m (B, 1, H, W) in {0, 1} (float or bool)."""
        m = m.to(x.dtype)
        return torch.sigmoid(self.trunk(torch.cat([x * (1 - m), m], 1)))

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """x_fill (B, 1, H, W) = x ⊙ (1 − m) + raw ⊙ m."""
        m = m.to(x.dtype)
        return x * (1 - m) + self.raw(x, m) * m


def sample_masks(n: int, size: int | tuple[int, int], *, shapes: tuple[int, int] = (1, 3),
                 side_px: tuple[float, float] = (4.0, 20.0), prior: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Random holes: unions of 1..k axis-aligned ellipses or rectangles, inside the image.

    Each shape has a width and a height drawn uniformly in ``side_px`` (pixels), is an ellipse
    or a rectangle with probability 1/2, and is centred uniformly so that it lies inside the
    image; with a ``prior`` its centre is the centre of a pixel drawn with probability
    proportional to ``prior`` (e.g. the region where findings can occur), moved inwards just
    enough to keep the shape inside the image.

    Args:
        n: number of masks.
        size: image side (int) or (H, W), pixels.
        shapes: (min, max) shapes per mask, inclusive.
        side_px: (min, max) width / height of one shape, pixels.
        prior: optional (H, W) non-negative weights (not all zero).
        generator: torch generator (CPU) for reproducible draws.

    Returns: (n, 1, H, W) float32 in {0, 1}, 1 = hole; never empty.
    """
    H, W = (size, size) if isinstance(size, int) else size
    lo, hi = shapes
    g = generator
    K = hi
    count = torch.randint(lo, hi + 1, (n,), generator=g)                  # (n,)
    active = torch.arange(K)[None, :] < count[:, None]                    # (n, K)
    s_lo, s_hi = float(side_px[0]), float(min(side_px[1], H, W))
    s_lo = min(s_lo, s_hi)
    w = s_lo + (s_hi - s_lo) * torch.rand(n, K, generator=g)              # (n, K) px
    h = s_lo + (s_hi - s_lo) * torch.rand(n, K, generator=g)
    ellipse = torch.rand(n, K, generator=g) < 0.5
    if prior is None:
        cx = w / 2 + (W - w) * torch.rand(n, K, generator=g)
        cy = h / 2 + (H - h) * torch.rand(n, K, generator=g)
    else:
        k = _prior_pixels(prior, n * K, H, W, g).view(n, K)                # (n, K)
        cx = ((k % W).to(torch.float32) + 0.5).clamp(w / 2, W - w / 2)
        cy = ((k // W).to(torch.float32) + 0.5).clamp(h / 2, H - h / 2)
    yy = (torch.arange(H, dtype=torch.float32) + 0.5).view(1, 1, H, 1)
    xx = (torch.arange(W, dtype=torch.float32) + 0.5).view(1, 1, 1, W)
    dx = (xx - cx[..., None, None]) / (w[..., None, None] / 2)            # (n, K, 1, W)
    dy = (yy - cy[..., None, None]) / (h[..., None, None] / 2)            # (n, K, H, 1)
    inside = torch.where(ellipse[..., None, None], dx ** 2 + dy ** 2 <= 1.0,
                         (dx.abs() <= 1.0) & (dy.abs() <= 1.0))           # (n, K, H, W)
    m = (inside & active[..., None, None]).any(1, keepdim=True)           # (n, 1, H, W)
    # a sub-pixel ellipse may miss every pixel centre: fall back to its centre pixel
    empty = ~m.flatten(1).any(1)
    if bool(empty.any()):
        r = cy[:, 0].long().clamp(0, H - 1)
        c = cx[:, 0].long().clamp(0, W - 1)
        idx = empty.nonzero()[:, 0]
        m[idx, 0, r[idx], c[idx]] = True
    return m.to(torch.float32)


def _prior_pixels(prior: torch.Tensor, count: int, H: int, W: int,
                  g: torch.Generator | None) -> torch.Tensor:
    """``count`` flat pixel indices (y W + x) of an H x W image drawn with replacement with
    probability proportional to ``prior`` ((H, W) non-negative weights, not all zero)."""
    p = prior.detach().to(torch.float64).reshape(-1).clamp(min=0)
    if p.numel() != H * W or not bool(p.sum() > 0):
        raise ValueError(f"prior must be ({H}, {W}) non-negative weights, not all zero")
    return torch.multinomial(p, count, replacement=True, generator=g)


def window_side(side: int, share: float, multiple: int) -> int:
    """Side (px) of the training windows: ``share`` of ``side`` rounded up to a ``multiple``,
    at most ``side``."""
    w = -(-round(share * side) // multiple) * multiple
    return max(multiple, min(side, w))


def draw_windows(n: int, H: int, W: int, win: int, prior: torch.Tensor | None = None,
                 g: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left offsets (oy (n,), ox (n,)) of ``win`` x ``win`` training windows in an H x W
    image: uniform, or centred on a pixel drawn with probability proportional to ``prior``
    ((H, W) non-negative weights), clamped to the image."""
    if prior is None:
        oy = torch.randint(H - win + 1, (n,), generator=g)
        ox = torch.randint(W - win + 1, (n,), generator=g)
        return oy, ox
    k = _prior_pixels(prior, n, H, W, g)                                 # (n,)
    return ((k // W) - win // 2).clamp(0, H - win), ((k % W) - win // 2).clamp(0, W - win)


def cut_windows(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, win: int) -> torch.Tensor:
    """x (B, C, H, W) cut to the windows at offsets oy, ox (B,) -> (B, C, win, win)."""
    r = torch.arange(win)
    rows = (oy[:, None] + r)[:, None, :, None]                             # (B, 1, win, 1)
    cols = (ox[:, None] + r)[:, None, None, :]                             # (B, 1, 1, win)
    b = torch.arange(len(x))[:, None, None, None]
    c = torch.arange(x.shape[1])[None, :, None, None]
    return x[b, c, rows, cols]


def inpaint_loss(raw: torch.Tensor, x: torch.Tensor, m: torch.Tensor, *,
                 outside_weight: float = 0.1, n_in: torch.Tensor | None = None,
                 n_out: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of the inpainter (intensities in [0, 1]).

    ``L = L1_in + outside_weight * L1_out`` where ``L1_in`` / ``L1_out`` are the mean |raw − x|
    over pixels inside / outside the hole. An extra L1 on image gradients (forward differences)
    around the hole, meant to sharpen the fills, was measured and dropped: same in-box L1 to
    the true healthy twin (0.0411 vs 0.0412 at 764 steps), worse hole L1 on held-out negatives
    (0.0502 vs 0.0477), barely sharper fills.

    Args:
        raw: (B, 1, H, W) the network's guess (:meth:`Inpainter.raw`).
        x: (B, 1, H, W) the true image.
        m: (B, 1, H, W) hole, 1 = filled.
        n_in, n_out: the pixel counts to divide by (default: this batch's, inside / outside
            the hole, at least 1); a step cut into passes gives every pass the whole batch's,
            so that the passes' losses add up to the batch's.

    Returns: (scalar loss, {"l1_in", "l1_out"} as floats).
    """
    err = (raw - x).abs()
    n_in = m.sum().clamp(min=1.0) if n_in is None else n_in
    n_out = (1 - m).sum().clamp(min=1.0) if n_out is None else n_out
    l_in = (err * m).sum() / n_in
    l_out = (err * (1 - m)).sum() / n_out
    loss = l_in + outside_weight * l_out
    parts = {"l1_in": float(l_in.detach()), "l1_out": float(l_out.detach())}
    return loss, parts


def _step_loss(net: Inpainter, x: torch.Tensor, m: torch.Tensor, outside_weight: float
               ) -> tuple[float, dict[str, float]]:
    """The training loss of one batch (x, m (b, 1, H, W)) and its parts, with its gradient
    accumulated in ``net``'s parameters. On the CPU the batch goes through the network in
    :func:`medxgan.cpu.cpu_batch`-sized passes (16 images at 128 px; a 64 px window batch of
    32 in one), each divided by the whole batch's pixel counts: the same loss and gradient up
    to float rounding (the U-Net has no batch statistics), 1.2-1.3x faster per whole-image
    step at 128 px in session 18's measurements."""
    step = cpu_batch(len(x), x.shape[-2:], x.device)
    n_in, n_out = m.sum().clamp(min=1.0), (1 - m).sum().clamp(min=1.0)
    total, parts = 0.0, {"l1_in": 0.0, "l1_out": 0.0}
    for s in range(0, len(x), step):
        xs, ms = x[s:s + step], m[s:s + step]
        loss, p = inpaint_loss(net.raw(xs, ms), xs, ms, outside_weight=outside_weight,
                               n_in=n_in, n_out=n_out)
        loss.backward()
        total += float(loss.detach())
        parts = {k: parts[k] + p[k] for k in parts}
    return total, parts


def train_inpainter(images_neg: torch.Tensor, config: InpaintConfig | None = None, *,
                    prior: torch.Tensor | None = None,
                    progress: Callable[[int, dict[str, float]], None] | None = None,
                    **overrides: Any) -> tuple[Inpainter, dict[str, Any]]:
    """Train an :class:`Inpainter` on images the classifier calls negative.

    Every step draws ``batch`` images (with replacement), flips half of them horizontally
    (``flip``), draws one hole per image (:func:`sample_masks`, shape sides
    ``shape_frac * side``, centred by ``prior`` when given) and takes one Adam step on
    :func:`inpaint_loss`. With ``train_crop`` < 1 each image is first cut to a random window
    (:func:`draw_windows`, :func:`cut_windows`) and its hole drawn inside the window, except in
    the last ``whole_share`` of the budget (:func:`~medxgan.generators.unet.spent_share`).
    Seeded: on CPU, the same images, config and ``steps`` give the same weights (a ``seconds``
    budget stops after a machine-dependent number of steps). The global torch RNG is not
    touched.

    Args:
        images_neg: (N, 1, H, W) float in [0, 1], images f calls negative; H, W divisible by
            ``2**depth``.
        config: :class:`InpaintConfig` (default: its defaults).
        prior: optional (H, W) non-negative weights of where findings can occur (hole centres).
        progress: called as ``progress(step, {"loss", "l1_in", "l1_out"})`` after every step.
        **overrides: config fields to replace (``steps``, ``seconds``, ``batch``, ``seed``,
            ``device``, ...); validated like the config.

    Returns:
        (the inpainter in eval mode on the chosen device, stats) with stats ``steps``,
        ``seconds``, ``s_per_step``, ``params``, ``n_images``, ``final_loss`` (mean of the last
        up to 50 steps), ``window`` (side of the training windows, px), ``window_steps``
        (steps taken on windows), ``history`` (``[step, loss, l1_in]`` every ``log_every``
        steps) and ``config`` (resolved).
    """
    base = config if config is not None else InpaintConfig()
    cfg = InpaintConfig.model_validate({**base.model_dump(), **overrides})
    if images_neg.ndim != 4 or images_neg.shape[1] != 1 or len(images_neg) == 0:
        raise ValueError(f"images_neg must be (N, 1, H, W) with N > 0, got "
                         f"{tuple(images_neg.shape)}")
    dev = device(cfg.device)
    x_all = images_neg.detach().to(torch.float32).cpu()
    N, _, H, W = x_all.shape
    side = min(H, W)
    side_px = (cfg.shape_frac[0] * side, cfg.shape_frac[1] * side)
    depth = cfg.depth_for(side)
    win = window_side(side, cfg.train_crop, 2 ** depth)
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = Inpainter(cfg.base, depth)
    net.to(dev).train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    history: list[list[float]] = []
    recent: list[float] = []
    t0 = time.perf_counter()
    step = window_steps = 0
    while True:
        if budget_spent(cfg.steps, cfg.seconds, step, t0):
            break
        xb = draw_batch(x_all, cfg.batch, cfg.flip, g)                   # (b, 1, H, W)
        if win < side and spent_share(cfg.steps, cfg.seconds, step, t0) < \
                1.0 - cfg.whole_share:   # windows: the holes keep the whole image's scale
            oy, ox = draw_windows(cfg.batch, H, W, win, prior, g)
            xb = cut_windows(xb, oy, ox, win)                            # (b, 1, win, win)
            window_steps += 1
            m = sample_masks(cfg.batch, win, shapes=cfg.shapes, side_px=side_px, generator=g)
        else:
            m = sample_masks(cfg.batch, (H, W), shapes=cfg.shapes, side_px=side_px,
                             prior=prior, generator=g)                   # (b, 1, H, W)
        xb, m = xb.to(dev), m.to(dev)
        opt.zero_grad(set_to_none=True)
        loss, parts = _step_loss(net, xb, m, cfg.outside_weight)      # backward done
        opt.step()
        step += 1
        recent = (recent + [loss])[-50:]
        if step % cfg.log_every == 0:
            history.append([step, recent[-1], parts["l1_in"]])
        if progress is not None:
            progress(step, {"loss": recent[-1], **parts})
    seconds = time.perf_counter() - t0
    net.eval()
    stats = {"steps": step, "seconds": seconds, "s_per_step": seconds / max(step, 1),
             "params": sum(p.numel() for p in net.parameters()), "n_images": N,
             "final_loss": sum(recent) / len(recent) if recent else float("nan"),
             "window": win, "window_steps": window_steps, "history": history,
             "config": cfg.model_dump(mode="json")}
    return net, stats


def save_inpainter(net: Inpainter, stats: dict[str, Any] | None = None) -> bytes:
    """Serialise weights + architecture (+ JSON-able stats) to bytes (``torch.save``)."""
    buf = io.BytesIO()
    torch.save({"state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
                "base": net.base, "depth": net.depth, "stats": stats or {}}, buf)
    return buf.getvalue()


def load_inpainter(data: bytes) -> tuple[Inpainter, dict[str, Any]]:
    """Inverse of :func:`save_inpainter` (``weights_only=True``, CPU, eval mode)."""
    obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    net = Inpainter(int(obj["base"]), int(obj["depth"]))
    net.load_state_dict(obj["state_dict"])
    return net.eval(), obj.get("stats", {})


class InpaintGenerator(nn.Module):
    """The ``inpaint`` generator family (``gan.model.family: inpaint``) for the explainers.

    It has no latent code: an image's counterfactual x_neg is the in-filling of the smallest
    region whose in-filling makes f call it negative
    (:func:`medxgan.generators.inpaint.search.search_counterfactual` with ``search``), and
    the positive counterpart is the image itself. ``family`` names its family in
    :mod:`medxgan.generators.registry` (``family_of(G)``), which the generator methods
    (``medxgan``, ``latent_ig``, ``counterfactual_ig``) explain with; ``image_conditioned``
    is kept for callers of earlier releases (the family's ``latent`` says the same).

    Args:
        inpainter: the trained :class:`Inpainter`.
        image_size: the side it was trained at (px).
        search: keyword arguments of the search at 64 px (``SearchConfig`` as a dict; patch
            sides are scaled to the explained images' side).
    """

    family = "inpaint"
    image_conditioned = True

    def __init__(self, inpainter: Inpainter, image_size: int, search: dict | None = None,
                 mask_net: nn.Module | None = None, amortise: dict | None = None):
        super().__init__()
        self.inpainter = inpainter
        self.image_size = int(image_size)
        self.search = SearchConfig.model_validate(search or {})
        self.mask_net = mask_net
        self.amortise = AmortiseConfig.model_validate(amortise or {})

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """x_fill = inpainter(x, m) (B, 1, H, W) in [0, 1]."""
        return self.inpainter(x, m)

    @torch.no_grad()
    def fill(self, x: torch.Tensor, mask: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """In-fill ``mask`` (B, 1, H, W) bool / {0, 1} of images x (B, 1, H, W) in [0, 1], on
        the in-filler's device, ``batch`` at a time (fewer on the CPU,
        :func:`medxgan.cpu.cpu_batch`); the result is on x's device."""
        dev = next(self.inpainter.parameters()).device
        batch = cpu_batch(batch, x.shape[-2:], dev)
        out = [self.inpainter(x[s:s + batch].to(dev), mask[s:s + batch].to(dev, x.dtype))
               for s in range(0, len(x), batch)]
        return torch.cat(out).to(x.device) if out else x.clone()

    def counterfactual(self, images: torch.Tensor, classifier: nn.Module) -> SearchResult:
        """:class:`~medxgan.generators.base.SearchResult` of (B, 1, H, W) images in [0, 1]
        (CPU tensors; the search runs on the in-filler's device). With a ``mask_net`` the
        amortised mask is tried first and only the images it does not flip are searched
        (:func:`medxgan.generators.inpaint.amortised.amortised_counterfactual`); else with
        ``search.start`` ``gradcam`` f's Grad-CAM proposes the start
        (:func:`medxgan.generators.inpaint.start.gradcam_counterfactual`)."""

        def search(x: torch.Tensor, **start) -> SearchResult:
            return search_counterfactual(x, classifier, self.inpainter, **start,
                                         **self.search.for_size(min(x.shape[-2:]), 2 ** getattr(
                                             self.inpainter, "depth", 0)))

        if self.mask_net is not None:
            return amortised_counterfactual(self, images, classifier, search)
        if self.search.start == "gradcam":
            return gradcam_counterfactual(self, images, classifier, search)
        return search(images)
