"""Baseline classifier architectures: the prototype's small CNN and a 1-channel ResNet-18.

Both map a (B, C, H, W) image to (B, num_outputs) logits and work at any input size
(global average pooling before the linear head).
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Three conv blocks (16/32/64 channels) + global average pooling + linear.

    Block = ``convs_per_block`` x (Conv3x3 + BatchNorm + ReLU); the first two blocks end in a
    2x2 max pool, so the last conv (Grad-CAM's layer) sees H/4 x W/4 (16 x 16 at 64 px).

    Args:
        in_channels: 1 (greyscale) or 3.
        num_outputs: 1 (one logit) or 2 (two-class logits).
        widths: channels of the three blocks.
        convs_per_block: conv layers per block (1: the prototype).
    """

    def __init__(self, in_channels: int = 1, num_outputs: int = 1,
                 widths: tuple[int, int, int] = (16, 32, 64), convs_per_block: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            for _ in range(convs_per_block):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                           nn.ReLU(inplace=True)]
                c = w
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> logits (B, num_outputs)."""
        h = self.features(x)                      # (B, 64, H/4, W/4)
        return self.head(h.mean(dim=(2, 3)))      # (B, num_outputs)


def resnet18_1ch(num_outputs: int = 1) -> nn.Module:
    """torchvision ResNet-18 (random init) whose stem takes one greyscale channel."""
    return build_model("resnet18", in_channels=1, num_outputs=num_outputs)


def build_model(arch: str, in_channels: int = 1, num_outputs: int = 1) -> nn.Module:
    """An untrained network by name: ``"small_cnn"``, ``"small_cnn2"`` (two convs per block)
    or a torchvision classification model.

    For torchvision models the first Conv2d is replaced by one with ``in_channels`` inputs
    when it differs from 3 (same kernel, stride, padding).

    Raises:
        ValueError: unknown architecture name.
    """
    if arch == "small_cnn":
        return SmallCNN(in_channels, num_outputs)
    if arch == "small_cnn2":  # two convs per block
        return SmallCNN(in_channels, num_outputs, convs_per_block=2)
    import torchvision

    try:
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_outputs)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"unknown architecture {arch!r}: not 'small_cnn' nor a torchvision "
                         f"model name") from exc
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    return model


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            new = nn.Conv2d(in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                            m.dilation, m.groups, m.bias is not None, m.padding_mode)
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], new)
            return
    raise ValueError("model has no Conv2d to adapt to the input channels")
