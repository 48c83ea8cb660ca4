"""Channel shuffle (Zhang et al., "ShuffleNet", CVPR 2018).

Local stand-in with the same forward as ``compresskit.ChannelShuffle`` (view into
``[N, groups, C/groups, H, W]``, swap the two channel axes, flatten back). The models import
``ChannelShuffle`` from here; this module re-exports the library's class once it exists, so
the pruner sees the module type it knows.

Note the official FeatherFace V1 code uses the *other* convention (view into
``[N, C/groups, groups, ...]``); with ``C`` channels that permutation equals this one with
``groups = C // official_groups``, which is how ``featherface_v1.py`` reproduces it.
"""

from __future__ import annotations

import torch
from torch import nn

try:  # the library's module, once a colleague has added it to compresskit/groups.py
    from compresskit import ChannelShuffle as ChannelShuffle  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the state of compresskit

    class ChannelShuffle(nn.Module):  # type: ignore[no-redef]
        """Parameter-free channel permutation between ``groups`` groups.

        Args:
            groups: number of groups; the channel count must be divisible by it.
        """

        def __init__(self, groups: int) -> None:
            super().__init__()
            if groups < 1:
                raise ValueError(f"groups must be >= 1, got {groups}")
            self.groups = groups

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, c, h, w = x.shape
            # (N, C, H, W) -> (N, g, C/g, H, W) -> (N, C/g, g, H, W) -> (N, C, H, W)
            x = x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2)
            return x.reshape(n, c, h, w)

        def extra_repr(self) -> str:
            return f"groups={self.groups}"

__all__ = ["ChannelShuffle"]
