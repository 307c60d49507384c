"""medXGAN generator and discriminators (Dravid et al., CVPR 2022 Workshops, arXiv 2204.05376).

Images are greyscale in GAN space [-1, 1] (``to_gan(x01) = 2 x - 1``). The generator takes
an anatomy code z_a (B, d_a) and a pathology code z_p (B, d_p); z_p is exactly 0 for
negatives and ~ N(0, I) for positives.

Generators (``GanConfig.generator``):
  - ``published``: Linear(d_a + d_p -> 768) -> (768, 1, 1), ConvTranspose(k5, s2, no bias) +
    BatchNorm + ReLU blocks to 384, 256, 192 channels (5, 13, 29 px), a last
    ConvTranspose(k8, s2) + Tanh to 64 px; every doubling of the size adds one k5 block
    (32 px: 5, 13 -> 32; 128 px: ..., 61 -> 128). ``upsample="resize_conv"`` replaces the
    transposed convolutions by nearest x2 upsampling + 3x3 conv (no checkerboard), starting
    from a 4 x 4 map.
  - ``local``: G(z_a, z_p) = A(z_a) + M(z_a, z_p) * (T(z_a, z_p) - A(z_a)), with A and T in
    [-1, 1] (tanh) and the mask M in [0, 1], so G stays in [-1, 1]. M is gated by
    ``1 - exp(-|z_p|^2)``, which is exactly 0 at z_p = 0: the residual M * (T - A) is then
    exactly zero and G(z_a, 0) == A(z_a) bit for bit. ``local_frame`` px at the image border
    are excluded from the residual (the prototype's residual learned a border comb).

Discriminators (``GanConfig.discriminator``), ``forward(x, c=None) -> (B,)`` logits:
  - ``unconditional``: six 3x3 convs 16 -> 512 channels, strides 2,1,2,1,2,1, LeakyReLU(0.2),
    Dropout(0.5) (:class:`FastDropout`), BatchNorm except after the first, Linear -> 1 (``c`` is ignored).
  - ``projection``: the same trunk phi; logit = psi(phi(x)) + <embed(c), mean_hw phi(x)>
    (Miyato & Koyama 2018), so a generated positive must look like a real positive.

Widths scale with ``g_width`` / ``d_width`` (channels rounded, at least 4). All conv /
linear weights are initialised N(0, 0.02), BatchNorm weights N(1, 0.02).
"""

from __future__ import annotations

import math
import torch
from torch import nn

from medxgan.config.models import GanConfig  # noqa: F401  (re-exported)

_PUBLISHED_CH = (384, 256, 192, 128, 96, 64)  # k5 blocks; 64 px uses the first three
_RESIZE_CH = (384, 256, 192, 128, 96, 64, 48)
_D_CH = (16, 32, 64, 128, 256, 512)
_D_STRIDES = (2, 1, 2, 1, 2, 1)


def to_gan(x01: torch.Tensor) -> torch.Tensor:
    """Pixel space [0, 1] -> GAN space [-1, 1]."""
    return 2 * x01 - 1


def from_gan(y: torch.Tensor) -> torch.Tensor:
    """GAN space [-1, 1] -> pixel space [0, 1]."""
    return (y + 1) / 2


class FastDropout(nn.Module):
    """Inverted dropout with a cheap mask: ``x * keep / (1 - p)`` in training, ``x`` in eval.

    Same semantics as ``nn.Dropout(p)`` (and no state, so checkpoints are interchangeable),
    but the mask is drawn as random *bits* instead of one Bernoulli draw per element, which
    dominates CPU time at these sizes (``aten::bernoulli_`` was 15 % of a GAN training step):
    for p = 0.5 every bit of a random int32 is one element's coin (6x faster than
    ``F.dropout`` on a (32, 16, 32, 32) tensor, 1 thread); for other p each element gets one
    random byte and ``p`` is rounded to a multiple of 1/256. Deterministic under
    ``torch.manual_seed``.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self._cut = round(p * 256)          # keep where the byte >= cut (byte path)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        n = x.numel()
        if self.p == 0.5:
            words = torch.randint(-2**31, 2**31 - 1, ((n + 31) // 32, 1), dtype=torch.int32,
                                  device=x.device)
            shifts = torch.arange(32, dtype=torch.int32, device=x.device)
            keep = ((words >> shifts) & 1).flatten()[:n].view(x.shape).to(x.dtype)
            return x * keep * 2.0
        words = torch.randint(-2**31, 2**31 - 1, ((n + 3) // 4,), dtype=torch.int32,
                              device=x.device)
        keep = (words.view(torch.uint8)[:n].view(x.shape) >= self._cut).to(x.dtype)
        return x * keep * (256.0 / (256 - self._cut))


def _ch(c: int, w: float) -> int:
    return max(4, int(round(c * w)))


class _Decoder(nn.Module):
    """Latent (B, d_in) -> pre-activation maps (B, out_ch, S, S) of the published layout."""

    def __init__(self, d_in: int, out_ch: int, size: int, width: float, upsample: str):
        super().__init__()
        n = int(math.log2(size))
        self.upsample = upsample
        if upsample == "convtranspose":
            chans = [_ch(768, width)] + [_ch(c, width) for c in _PUBLISHED_CH[:n - 3]]
            self.c0, self.s0 = chans[0], 1
            blocks: list[nn.Module] = []
            for a, b in zip(chans[:-1], chans[1:]):
                blocks += [nn.ConvTranspose2d(a, b, 5, 2, bias=False), nn.BatchNorm2d(b),
                           nn.ReLU(True)]
            blocks.append(nn.ConvTranspose2d(chans[-1], out_ch, 8, 2))   # -> S px
        else:
            chans = [_ch(c, width) for c in _RESIZE_CH[:n - 1]]
            self.c0, self.s0 = chans[0], 4
            blocks = []
            for a, b in zip(chans[:-1], chans[1:]):
                blocks += [nn.Upsample(scale_factor=2, mode="nearest"),
                           nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b),
                           nn.ReLU(True)]
            blocks.append(nn.Conv2d(chans[-1], out_ch, 3, padding=1))
        self.fc = nn.Linear(d_in, self.c0 * self.s0 * self.s0)
        self.net = nn.Sequential(*blocks)
        self.size = size

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, self.c0, self.s0, self.s0)            # (B, C0, s0, s0)
        if self.upsample == "resize_conv":
            h = torch.relu(h)
        out = self.net(h)                                              # (B, out_ch, S, S)
        assert out.shape[-1] == self.size, (out.shape, self.size)
        return out


#: the sides (px) the published generator and discriminator are built for
PUBLISHED_SIZES: tuple[int, ...] = (32, 64, 128, 256)


def _check_size(cfg: GanConfig) -> None:
    if cfg.image_size not in PUBLISHED_SIZES:
        raise ValueError(f"gan.model.image_size: the published family is built for "
                         f"{', '.join(map(str, PUBLISHED_SIZES))} px, not {cfg.image_size} "
                         f"(the inpaint family takes any multiple of 8)")


class Generator(nn.Module):
    """medXGAN generator G(z_a, z_p) -> (B, 1, S, S) in [-1, 1] (variant per ``GanConfig``).

    Attributes:
        d_a, d_p: latent sizes; image_size: S; config: the :class:`GanConfig`;
        family: ``published`` (its family in :mod:`medxgan.generators.registry`).
    """

    family = "published"

    def __init__(self, config: GanConfig | None = None):
        super().__init__()
        cfg = config or GanConfig()
        _check_size(cfg)
        self.config = cfg
        self.d_a, self.d_p, self.image_size = cfg.d_a, cfg.d_p, cfg.image_size
        self.local = cfg.generator == "local"
        S, w, up = cfg.image_size, cfg.g_width, cfg.upsample
        if self.local:
            self.anatomy = _Decoder(cfg.d_a, 1, S, w, up)
            self.pathology = _Decoder(cfg.d_a + cfg.d_p, 2, S, w, up)
            frame = torch.zeros(1, 1, S, S)
            f = cfg.local_frame
            frame[..., f:S - f, f:S - f] = 1.0
            self.register_buffer("frame", frame, persistent=False)
        else:
            self.net = _Decoder(cfg.d_a + cfg.d_p, 1, S, w, up)
        init_weights(self)
        self.encoder: nn.Module | None = None  # inversion encoder, see attach_encoder

    def attach_encoder(self, encoder: nn.Module | None) -> None:
        """Carry an inversion encoder E (``medxgan.generators.published.encoder``): inversion then starts
        from E(x). It becomes a submodule (moves with ``.to``; its weights appear under
        ``encoder.*`` in this module's state_dict); None detaches it."""
        self.encoder = encoder

    def forward(self, z_a: torch.Tensor, z_p: torch.Tensor) -> torch.Tensor:
        """z_a (B, d_a), z_p (B, d_p) -> images (B, 1, S, S) in [-1, 1]."""
        return self.forward_with_mask(z_a, z_p)[0]

    def forward_with_mask(self, z_a: torch.Tensor, z_p: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (B, 1, S, S) and, for the local variant, the mask M (B, 1, S, S) in [0, 1]."""
        if not self.local:
            return torch.tanh(self.net(torch.cat([z_a, z_p], 1))), None
        a = torch.tanh(self.anatomy(z_a))                              # (B, 1, S, S)
        mt = self.pathology(torch.cat([z_a, z_p], 1))                  # (B, 2, S, S)
        gate = -torch.expm1(-z_p.pow(2).sum(1))                        # (B,), exactly 0 at 0
        m = torch.sigmoid(mt[:, :1]) * gate[:, None, None, None] * self.frame
        t = torch.tanh(mt[:, 1:])                                      # (B, 1, S, S)
        return a + m * (t - a), m

    def residual(self, z_a: torch.Tensor, z_p: torch.Tensor) -> torch.Tensor:
        """G(z_a, z_p) - G(z_a, 0) computed as one batch (B, 1, S, S)."""
        B = z_a.shape[0]
        out = self(torch.cat([z_a, z_a]), torch.cat([z_p, torch.zeros_like(z_p)]))
        return out[:B] - out[B:]


class Discriminator(nn.Module):
    """Published unconditional discriminator: x (B, 1, S, S) in [-1, 1] -> logit (B,)."""

    conditional = False

    def __init__(self, config: GanConfig | None = None):
        super().__init__()
        cfg = config or GanConfig()
        _check_size(cfg)
        layers: list[nn.Module] = []
        c, s = 1, cfg.image_size
        for i, (co, st) in enumerate(zip(_D_CH, _D_STRIDES)):
            co = _ch(co, cfg.d_width)
            layers.append(nn.Conv2d(c, co, 3, st, 1))
            if i > 0:
                layers.append(nn.BatchNorm2d(co))
            layers += [nn.LeakyReLU(0.2, True), FastDropout(cfg.d_dropout)]
            c, s = co, (s + 2 - 3) // st + 1
        self.phi = nn.Sequential(*layers)
        self.feat_ch = c
        self.psi = nn.Linear(c * s * s, 1)
        init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk features (B, C, S/8, S/8)."""
        return self.phi(x)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Real/fake logit (B,); ``c`` is ignored (unconditional)."""
        return self.psi(self.features(x).flatten(1))[:, 0]


class ProjectionDiscriminator(Discriminator):
    """Class-conditional projection discriminator: psi(phi(x)) + <embed(c), mean_hw phi(x)>."""

    conditional = True

    def __init__(self, config: GanConfig | None = None, num_classes: int = 2):
        super().__init__(config)
        self.embed = nn.Embedding(num_classes, self.feat_ch)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Logit (B,) of x (B, 1, S, S) being a real image of class c (B,) int64."""
        if c is None:
            raise ValueError("ProjectionDiscriminator needs the class c of every image")
        return self.forward_with_class(x, c)[0]

    def forward_with_class(self, x: torch.Tensor, c: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logit (B,) as :meth:`forward`, class term (B,) as :meth:`class_term`), one pass."""
        h = self.features(x)                                           # (B, C, s, s)
        pooled = h.mean(dim=(2, 3))                                    # (B, C)
        logit = self.psi(h.flatten(1))[:, 0] + (self.embed(c.long()) * pooled).sum(1)
        return logit, pooled @ (self.embed.weight[1] - self.embed.weight[0])

    def class_term(self, x: torch.Tensor) -> torch.Tensor:
        """<embed(1) - embed(0), mean_hw phi(x)> (B,): the discriminator's positive-class score."""
        h = self.features(x).mean(dim=(2, 3))                          # (B, C)
        return h @ (self.embed.weight[1] - self.embed.weight[0])


def build_discriminator(config: GanConfig) -> Discriminator:
    """The discriminator ``config.discriminator`` names."""
    return ProjectionDiscriminator(config) if config.discriminator == "projection" \
        else Discriminator(config)


def init_weights(module: nn.Module) -> None:
    """DCGAN init: conv / linear weights N(0, 0.02), biases 0, BatchNorm weights N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def generator_from_checkpoint(obj: dict) -> Generator:
    """The generator of a loaded published-family checkpoint dict (CPU, eval mode)."""
    G = Generator(GanConfig.model_validate(obj["gan_config"]))
    G.load_state_dict(obj["generator"])
    return G.eval()
