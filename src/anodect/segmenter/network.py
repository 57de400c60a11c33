"""The segmenter's network: a three-level U-Net, about 0.27 M weights at 24-48-96 channels.

Fully convolutional, so it reads a 64x64 training patch and a whole ROI crop alike;
no weights to download.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(c: int) -> nn.GroupNorm:
    # Group norm, not batch norm: the same statistics in training (64 px patches) and scoring
    # (whole crops); batch norm's running averages lagged the weights and shifted every score.
    return nn.GroupNorm(max(1, c // 4), c)


def _act() -> nn.LeakyReLU:
    # Leaky, not ReLU: where every feature of the last block was cut to zero the output was the
    # head's bias, one value for every such pixel, and crops tied at that ceiling (crack or not).
    return nn.LeakyReLU(0.1, inplace=True)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), _norm(c_out), _act(),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), _norm(c_out), _act())


class UNet(nn.Module):
    """Input [N, C, H, W] -> crack logits [N, 1, H, W] (any H, W: padded to a multiple of 4 inside).

    Args:
        in_channels: the input's channels (``inputs.CHANNELS``).
        channels: the three levels' widths.
    """

    def __init__(self, in_channels: int = 4, channels: tuple[int, int, int] = (24, 48, 96)):
        super().__init__()
        c1, c2, c3 = channels
        self.enc1, self.enc2, self.bottom = _block(in_channels, c1), _block(c1, c2), _block(c2, c3)
        self.dec2, self.dec1 = _block(c3 + c2, c2), _block(c2 + c1, c1)
        self.head = nn.Conv2d(c1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottom(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(b, size=e2.shape[-2:], mode="bilinear", align_corners=False), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False), e1], 1))
        return self.head(d1)[..., :h, :w]


def n_weights(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


__all__ = ["UNet", "n_weights"]
