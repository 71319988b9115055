"""CIFAR ResNet-20/32 (He et al. 2016, Sec. 4.2), the networks of L2RW and Meta-Weight-Net.

3 stages of ``n`` basic blocks with 16/32/64 channels; the shortcut that changes shape is
"option A" (stride-2 subsampling and zero-padded channels, no parameters), as in the
Meta-Weight-Net reference code. Depth = 6n + 2: ResNet-20 has n=3, ResNet-32 has n=5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride = stride
        self.pad = cout - cin

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self._shortcut(x))


class CifarResNet(nn.Module):
    """ResNet of depth ``6 * blocks + 2`` for 32x32 inputs; 64-dim embedding.

    Parameters
    ----------
    num_classes : int
        Number of output logits.
    blocks : int
        Basic blocks per stage (3 -> ResNet-20, 5 -> ResNet-32).
    in_channels : int
        Input channels (3 for CIFAR).
    """

    def __init__(self, num_classes: int, *, blocks: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers: list[nn.Module] = []
        cin = 16
        for i, cout in enumerate((16, 32, 64)):
            for j in range(blocks):
                layers.append(_Block(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.embedding_dim = 64
        self.head = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 64) globally pooled features."""
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, num_classes) logits."""
        return self.head(self.forward_features(x))


def resnet20(num_classes: int, *, in_channels: int = 3) -> CifarResNet:
    """ResNet-20 (0.27 M parameters)."""
    return CifarResNet(num_classes, blocks=3, in_channels=in_channels)


def resnet32(num_classes: int, *, in_channels: int = 3) -> CifarResNet:
    """ResNet-32 (0.46 M parameters), the network of the Meta-Weight-Net CIFAR experiments."""
    return CifarResNet(num_classes, blocks=5, in_channels=in_channels)
