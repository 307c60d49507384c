"""The ``residual`` generator family: VA-GAN's additive map generator, as the explainers see it.

Paper: Baumgartner, Koch, Tezcan, Ang, Konukoglu, "Visual Feature Attribution using
Wasserstein GANs", CVPR 2018. A map generator M (a small U-Net) turns an image x into

    x_neg = clamp(x + M(x), 0, 1),   M(x) in [-1, 1] (tanh)

trained against a WGAN-GP critic D (Gulrajani et al., NeurIPS 2017) that tells real negatives
from x_neg of positives, plus an L1 penalty on M(x) so that only what separates the classes is
changed. "Positive" and "negative" are what the audited classifier f calls the train images (the
explanation is of f, and the critic's real images are labelled by f's prediction, as in Singla
et al.); f's gradient is not used unless ``ResidualConfig.cls_weight`` > 0.

Public surface:

- :class:`ResidualNet`: ``M(x)`` (B, 1, H, W) in [-1, 1].
- :class:`Critic`: WGAN critic, (B, 1, H, W) -> (B,) scores (no normalisation layers).
- :func:`gradient_penalty`: WGAN-GP's penalty on interpolates.
- :func:`train_residual`: the seeded training loop -> ``(ResidualNet, stats)``.
- :class:`ResidualGenerator`: the family for the explainers (``counterfactual``, ``fill``),
  trained and loaded by its family (:mod:`medxgan.generators.residual.family`) through
  ``train_gan`` / ``load_generator``.

Pixel conventions: images (B, 1, H, W) float in [0, 1].
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medxgan.config.residual import ResidualConfig
from medxgan.explain._torch import probabilities
from medxgan.generators.base import SearchResult
from medxgan.generators.unet import UNet, budget_spent, device, draw_batch

__all__ = ["Critic", "ResidualConfig", "ResidualGenerator", "ResidualNet", "gradient_penalty",
           "train_residual"]


class ResidualNet(UNet):
    """VA-GAN's map generator: a :class:`~medxgan.generators.unet.UNet` on x, tanh output.

    Args:
        base: channels of the first level (8: 122 k parameters at depth 3).
        depth: number of 2x down-samplings; H and W must be divisible by ``2**depth``.
    """

    def __init__(self, base: int = 8, depth: int = 3):
        super().__init__(1, base, depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """M(x) (B, 1, H, W) in [-1, 1] for x (B, 1, H, W) in [0, 1]."""
        return torch.tanh(self.trunk(x))


class Critic(nn.Module):
    """WGAN critic: four 4x4 stride-2 convs (``base * 2**i`` channels, LeakyReLU 0.2, no
    normalisation, as WGAN-GP requires), global average pooling and a linear score.

    Args:
        base: channels of the first conv.
    """

    def __init__(self, base: int = 16):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for i in range(4):
            layers += [nn.Conv2d(cin, base * 2 ** i, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            cin = base * 2 ** i
        self.features = nn.Sequential(*layers)
        self.score = nn.Linear(cin, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1] -> (B,) critic scores (higher: more like a real negative)."""
        return self.score(self.features(x).mean((2, 3)))[:, 0]


def gradient_penalty(D: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP: mean (||grad D(x_hat)||_2 - 1)^2 over x_hat = e real + (1 - e) fake, e ~ U(0, 1)
    per image (drawn on the CPU from ``generator``). real, fake: (B, 1, H, W)."""
    e = torch.rand(len(real), 1, 1, 1, generator=generator).to(real.device, real.dtype)
    x_hat = (e * real + (1 - e) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
    return (g.flatten(1).norm(dim=1) - 1).pow(2).mean()


def _apply(M: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x_neg = clamp(x + M(x), 0, 1) (B, 1, H, W)."""
    return (x + M(x)).clamp(0, 1)


def train_residual(images_pos: torch.Tensor, images_neg: torch.Tensor,
                   config: ResidualConfig | None = None, *, classifier: nn.Module | None = None,
                   progress: Callable[[int, dict[str, float]], None] | None = None,
                   **overrides: Any) -> tuple[ResidualNet, dict[str, Any]]:
    """Train a :class:`ResidualNet` VA-GAN style.

    Every generator step is preceded by ``critic_steps`` critic steps, each on ``batch`` real
    negatives and the x_neg of ``batch`` positives: ``L_D = D(x_neg) - D(neg) + gp_weight GP``.
    The generator step minimises ``-D(x_neg) + l1_weight mean|M(x)| (+ cls_weight
    softplus(f(x_neg)))``. Batches are drawn with replacement, half flipped horizontally
    (``flip``). Seeded: on CPU the same inputs, config and ``steps`` give the same weights (a
    ``seconds`` budget stops after a machine-dependent number of steps); the global torch RNG
    is not touched.

    Args:
        images_pos: (P, 1, H, W) in [0, 1], images f calls positive (M's inputs).
        images_neg: (N, 1, H, W) in [0, 1], images f calls negative (the critic's real ones).
        config: :class:`ResidualConfig` (default: its defaults).
        classifier: f (logit (B,)), needed only when ``cls_weight`` > 0.
        progress: called as ``progress(step, {"loss_g", "loss_d", "l1", "wdist"})`` after every
            generator step.
        **overrides: config fields to replace (``steps``, ``seconds``, ``seed``, ``device``, ...).

    Returns:
        (M in eval mode on the chosen device, stats) with stats ``steps``, ``seconds``,
        ``s_per_step``, ``params``, ``critic_params``, ``n_images`` (positives + negatives),
        ``final_loss`` (mean generator loss of the last up to 50 steps), ``final_l1``,
        ``final_wdist`` (critic's estimate of the Wasserstein distance, same window),
        ``history`` (``[step, loss_g, l1, wdist]`` every ``log_every`` steps) and ``config``.
    """
    base = config if config is not None else ResidualConfig()
    cfg = ResidualConfig.model_validate({**base.model_dump(), **overrides})
    for name, xs in (("images_pos", images_pos), ("images_neg", images_neg)):
        if xs.ndim != 4 or xs.shape[1] != 1 or len(xs) == 0:
            raise ValueError(f"{name} must be (N, 1, H, W) with N > 0, got {tuple(xs.shape)}")
    if cfg.cls_weight > 0 and classifier is None:
        raise ValueError("cls_weight > 0 needs the classifier")
    dev = device(cfg.device)
    pos = images_pos.detach().to(torch.float32).cpu()
    neg = images_neg.detach().to(torch.float32).cpu()
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        M, D = ResidualNet(cfg.base, cfg.depth), Critic(cfg.critic_base)
    M.to(dev).train()
    D.to(dev).train()
    opt_m = torch.optim.Adam(M.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
    f = classifier.to(dev).eval() if classifier is not None and cfg.cls_weight > 0 else None

    def draw(xs: torch.Tensor) -> torch.Tensor:
        return draw_batch(xs, cfg.batch, cfg.flip, g).to(dev)           # (b, 1, H, W)

    history: list[list[float]] = []
    recent: list[tuple[float, float, float]] = []
    t0 = time.perf_counter()
    step = 0
    while True:
        if budget_spent(cfg.steps, cfg.seconds, step, t0):
            break
        for _ in range(cfg.critic_steps):
            xp, xn = draw(pos), draw(neg)
            with torch.no_grad():
                fake = _apply(M, xp)
            wdist = D(xn).mean() - D(fake).mean()
            loss_d = -wdist + cfg.gp_weight * gradient_penalty(D, xn, fake, g)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        xp = draw(pos)
        m = M(xp)
        fake = (xp + m).clamp(0, 1)
        l1 = m.abs().mean()
        loss_g = -D(fake).mean() + cfg.l1_weight * l1
        if f is not None:
            loss_g = loss_g + cfg.cls_weight * F.softplus(f(fake).float().reshape(-1)).mean()
        opt_m.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_m.step()
        step += 1
        recent = (recent + [(float(loss_g.detach()), float(l1.detach()),
                             float(wdist.detach()))])[-50:]
        if step % cfg.log_every == 0:
            history.append([step, *recent[-1]])
        if progress is not None:
            progress(step, {"loss_g": recent[-1][0], "l1": recent[-1][1],
                            "wdist": recent[-1][2], "loss_d": float(loss_d.detach())})
    seconds = time.perf_counter() - t0
    M.eval()
    mean = lambda i: sum(r[i] for r in recent) / len(recent) if recent else float("nan")  # noqa: E731
    stats = {"steps": step, "seconds": seconds, "s_per_step": seconds / max(step, 1),
             "params": sum(p.numel() for p in M.parameters()),
             "critic_params": sum(p.numel() for p in D.parameters()),
             "n_images": len(pos) + len(neg), "final_loss": mean(0), "final_l1": mean(1),
             "final_wdist": mean(2), "history": history, "config": cfg.model_dump(mode="json")}
    return M, stats


class ResidualGenerator(nn.Module):
    """The ``residual`` generator family (``gan.model.family: residual``) for the explainers.

    No latent code and no search: the counterfactual of an image f calls positive is
    x_neg = clamp(x + M(x), 0, 1) (one forward pass); an image f already calls negative is
    its own counterfactual (x_neg = x, empty mask), as in the inpaint family. The reported
    ``mask`` is where |x - x_neg| > ``mask_tol`` (never empty for an image f calls positive:
    at least its most changed pixel), so :meth:`fill` rebuilds x_neg from the mask that the
    ``medxgan`` explanation carries in its ``z_a`` column. ``family`` names its family in
    :mod:`medxgan.generators.registry`.

    Args:
        net: the trained :class:`ResidualNet`.
        image_size: the side it was trained at (px).
        mask_tol: intensity change that counts as changed (``ResidualConfig.mask_tol``).
    """

    family = "residual"
    image_conditioned = True

    def __init__(self, net: ResidualNet, image_size: int, mask_tol: float = 0.05):
        super().__init__()
        self.net = net
        self.image_size = int(image_size)
        self.mask_tol = float(mask_tol)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """clamp(x + M(x), 0, 1) (B, 1, H, W) for every image, whatever f says of it."""
        return _apply(self.net, x)

    @torch.no_grad()
    def _x_neg(self, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
        dev = next(self.net.parameters()).device
        out = [_apply(self.net, x[s:s + batch].to(dev)) for s in range(0, len(x), batch)]
        return torch.cat(out).to(x.device) if out else x.clone()

    @torch.no_grad()
    def fill(self, x: torch.Tensor, mask: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """x_neg (B, 1, H, W) of images x (B, 1, H, W) in [0, 1] given their carried masks
        (B, 1, H, W): clamp(x + M(x)) where the mask is non-empty, x where it is empty."""
        keep = ~mask.reshape(len(x), -1).to(torch.bool).any(1)                  # (B,)
        return torch.where(keep[:, None, None, None].to(x.device), x, self._x_neg(x, batch))

    @torch.no_grad()
    def counterfactual(self, images: torch.Tensor, classifier: nn.Module,
                       batch: int = 256) -> SearchResult:
        """:class:`~medxgan.generators.base.SearchResult` of (B, 1, H, W) images in [0, 1]
        (CPU tensors in and out; the map generator runs on its own device)."""
        dev = next(self.net.parameters()).device
        thr = float(getattr(classifier, "threshold", 0.5))
        x = images.detach().to(torch.float32).cpu()

        p_x = probabilities(classifier, x, batch, dev)                           # (B,)
        pos = p_x >= thr
        x_neg = torch.where(pos[:, None, None, None], self._x_neg(x, batch), x)
        d = (x - x_neg).abs().flatten(1)                                         # (B, H W)
        mask = d > self.mask_tol
        top = F.one_hot(d.argmax(1), d.shape[1]).to(torch.bool)                  # (B, H W)
        mask = torch.where((pos & ~mask.any(1))[:, None], top, mask) & pos[:, None]
        p_neg = torch.where(pos, probabilities(classifier, x_neg, batch, dev), p_x)
        return SearchResult(x_neg=x_neg, mask=mask.reshape(x.shape), p_x=p_x, p_neg=p_neg,
                            area=mask.float().mean(1), threshold=thr)
