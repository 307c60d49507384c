"""The ``published`` family: the medXGAN GAN of the paper (Dravid et al., CVPR 2022 Workshops,
arXiv 2204.05376), kept for reproduction (``gan.model.family: published``).

For each image x the generator is inverted (:mod:`.inversion`) to latents (z_a, z_p); then

    x_pos = G(z_a, z_p)          reconstruction (positive counterpart)
    x_neg = G(z_a, 0)            negative counterpart (same anatomy, pathology code off)
    frames_k = G(z_a, alpha_k z_p), alpha_k = k / (n_frames - 1)   interpolation

all shown in pixel space [0, 1]; the IG methods integrate along alpha -> G(z_a, alpha z_p)
(``path`` = ``generator``), or add the inversion residual x - G(z_a, z_p) linearly on the way
(``residual``: the path ends at x itself).

- :mod:`.gan`: G and the discriminators; :mod:`.train`: the training loop and its checkpoints;
- :mod:`.health`: per-checkpoint health; :mod:`.inversion`; :mod:`.encoder`: the optional
  inversion encoder.
"""

from __future__ import annotations

import torch
from torch import nn

from medxgan.explain._torch import chunks, logit, to_unit
from medxgan.generators.base import Counterfactual, GeneratorFamily, Interpolation, Path
from medxgan.generators.published.encoder import attach_kept_encoder
from medxgan.generators.published.gan import generator_from_checkpoint
from medxgan.generators.published.health import evaluate_health
from medxgan.generators.published.inversion import InversionResult, invert
from medxgan.generators.published.train import train_published


class PublishedFamily(GeneratorFamily):
    """``gan.model.family: published``, trained by ``gan.train`` itself."""

    latent = True
    progress = "train medXGAN (steps)"
    x_neg_text = "the negative counterpart G(z_a, 0)"

    # ------------------------------------------------------------------ the GAN stage
    def train(self, cohort_url, classifier, store, gan_config, train_config, progress=None):
        return train_published(cohort_url, classifier, store, gan_config, train_config, progress)

    def load(self, checkpoint, store=None, sha256=None, attach_encoder=True):
        G = generator_from_checkpoint(checkpoint)
        rec = attach_kept_encoder(G, store, sha256) if attach_encoder and store is not None \
            else None
        return G, rec

    def health(self, G, f, cohort, gan_config, train_config):
        from medxgan.cohort.loading import load_heldout

        tc = train_config
        held = load_heldout(cohort, gan_config.image_size, tc.health_heldout, tc.heldout_split)
        return evaluate_health(G, f, held, tc.health_samples, tc.health_inversion_steps,
                               seed=tc.seed)

    # ------------------------------------------------------------------ explaining
    def counterfactual(self, G, images, f, *, latents=None, inversion=None, seeds=None):
        """The latents of ``images``: an inversion (``inversion``, per-image ``seeds()``), or
        the ``latents`` given (an :class:`InversionResult` or ``(z_a, z_p)``)."""
        if latents is None:
            latents = invert(G, f, images, inversion, seed=seeds())
        if isinstance(latents, InversionResult):
            return Counterfactual(z_a=latents.z_a, z_p=latents.z_p, steps_run=latents.steps_run,
                                  recon_mse=latents.recon_mse)
        z_a, z_p = latents
        return Counterfactual(z_a=z_a, z_p=z_p, steps_run=torch.zeros(
            images.shape[0], dtype=torch.int64, device=z_a.device))

    def interpolation(self, G, f, images, cf, n, batch_size):
        z_a, z_p = cf.z_a, cf.z_p
        B, H, W = images.shape[0], images.shape[-2], images.shape[-1]
        alphas = torch.linspace(0, 1, n, device=images.device)        # (n,)
        with torch.no_grad():
            za = z_a.repeat_interleave(n, 0)                            # (B n, d_a)
            zp = (z_p[:, None, :] * alphas[None, :, None]).reshape(B * n, -1)  # (B n, d_p)
            frames, probs = _render(G, f, za, zp, batch_size)
            frames = frames.reshape(B, n, H, W)                         # (B, n, H, W)
            probs = probs.reshape(B, n)                                 # (B, n)
            x_neg, x_pos = frames[:, :1], frames[:, -1:]                # (B, 1, H, W)
            g = G(z_a, z_p)
            recon = (g - (2 * images - 1)).pow(2).flatten(1).mean(1)   # (B,) GAN space
        return Interpolation(frames=frames, frame_probs=probs, x_neg=x_neg, x_pos=x_pos,
                             change=(x_pos - x_neg)[:, 0], recon_mse=recon, p_pos=probs[:, -1])

    def path(self, G, images, cf, *, residual=False):
        z_a, z_p = cf.z_a.detach().to(images.device), cf.z_p.detach().to(images.device)
        r = None
        if residual:
            with torch.no_grad():
                r = images - to_unit(G(z_a, z_p))                      # (B, 1, H, W)

        def points(alphas: torch.Tensor) -> torch.Tensor:
            """G(z_a, alpha z_p) (+ alpha r) in [0, 1], not clamped: the generator's own path."""
            B, m = z_a.shape[0], alphas.shape[0]
            za = z_a.repeat_interleave(m, 0)                           # (B m, d_a)
            zp = (z_p[:, None, :] * alphas[None, :, None]).reshape(B * m, -1)  # (B m, d_p)
            with torch.no_grad():
                x = to_unit(G(za, zp))                                 # (B m, 1, H, W)
                if r is not None:
                    x = (x.reshape((B, m) + tuple(x.shape[1:]))
                         + alphas[None, :, None, None, None] * r[:, None]).reshape(x.shape)
            return x

        return Path("residual" if residual else "generator", points)


def _render(G: nn.Module, f: nn.Module, z_a: torch.Tensor, z_p: torch.Tensor,
            batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """G(z_a, z_p) in [0, 1] as (N, H, W) and f's probability (N,), in chunks."""
    xs, ps = [], []
    for s in chunks(z_a.shape[0], batch_size):
        x = to_unit(G(z_a[s], z_p[s])).clamp(0, 1)                    # (b, 1, H, W)
        xs.append(x[:, 0])
        ps.append(torch.sigmoid(logit(f, x)))
    return torch.cat(xs), torch.cat(ps)
