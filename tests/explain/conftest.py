"""Tiny stand-ins for the classifier and generator contracts (see medxgan/explain/base.py).

Classifier contract: ``f(x (B, 1, H, W) in [0, 1]) -> logit (B,)``, optional ``threshold``,
optional ``target_layer()``. Generator contract: ints ``d_a``, ``d_p``, ``image_size`` and
``G(z_a (B, d_a), z_p (B, d_p)) -> (B, 1, S, S)`` in [-1, 1].
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

S = 32
torch.set_num_threads(1)  # 2 shared cores: oversubscribed threads only slow tiny models down


class LinearConv(nn.Module):
    """One 5x5 conv (4 channels), global average pooling, linear: nearly linear in x."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 4, 5, padding=2)
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).mean((2, 3))).squeeze(1)  # (B,)


class SmallCNN(nn.Module):
    """Two conv blocks with BatchNorm (must run in eval mode), GAP, linear; has target_layer()."""

    threshold = 0.4

    def __init__(self, seed: int = 1):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(16, 1)
        self.body[1].running_mean.uniform_(-0.1, 0.1)
        self.body[1].running_var.uniform_(0.5, 1.5)

    def target_layer(self) -> nn.Module:
        return self.body[4]

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3))).squeeze(1)


class BoxSum(nn.Module):
    """logit = sum of the pixels inside a known box (x0, y0, x1, y1) minus a bias.

    A 1x1 conv (weight 1) sees x ⊙ box, so its activation lives only inside the box: the right
    Grad-CAM, IG (black baseline) and occlusion answer lies inside the box.
    """

    def __init__(self, box=(8, 12, 20, 22), size: int = S):
        super().__init__()
        m = torch.zeros(1, 1, size, size)
        x0, y0, x1, y1 = box
        m[..., y0:y1, x0:x1] = 1.0
        self.register_buffer("mask", m)
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        nn.init.ones_(self.conv.weight)
        self.bias = float(m.sum()) * 0.5

    def forward(self, x):
        return self.conv(x * self.mask).sum((1, 2, 3)) - self.bias  # (B,)


class TinyGenerator(nn.Module):
    """Linear -> 4x4 -> ConvTranspose x3 (BatchNorm, ReLU) -> Tanh at 32 px."""

    def __init__(self, d_a: int = 8, d_p: int = 4, image_size: int = S, seed: int = 2):
        super().__init__()
        torch.manual_seed(seed)
        self.d_a, self.d_p, self.image_size = d_a, d_p, image_size
        self.fc = nn.Linear(d_a + d_p, 16 * 4 * 4)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(16, 16, 4, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.ConvTranspose2d(8, 1, 4, 2, 1), nn.Tanh())
        with torch.no_grad():  # default init draws near-constant images: give them contrast
            self.net[6].weight.mul_(12.0)

    def forward(self, z_a, z_p):
        h = self.fc(torch.cat([z_a, z_p], 1)).view(-1, 16, 4, 4)  # (B, 16, 4, 4)
        return self.net(h)                                         # (B, 1, S, S)


MODELS = {"linear_conv": LinearConv, "small_cnn": SmallCNN}


@pytest.fixture(params=sorted(MODELS))
def model(request):
    return MODELS[request.param]().eval()


@pytest.fixture
def generator():
    return TinyGenerator().eval()


@pytest.fixture
def images():
    """Six seeded 32 px images in [0, 1]: a smooth background plus a bright blob."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    out = []
    for i in range(6):
        cy, cx = torch.randint(6, S - 6, (2,), generator=g).tolist()
        blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0)
        base = 0.3 + 0.2 * torch.rand(1, generator=g) * yy / S
        out.append((base + 0.5 * blob + 0.03 * torch.rand(S, S, generator=g)).clamp(0, 1))
    return torch.stack(out)[:, None].float()  # (6, 1, S, S)
