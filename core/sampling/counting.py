"""Counting network evaluations (NFE) of any sampler, read rather than assumed."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["CountingNet"]


class CountingNet(nn.Module):
    """Wraps ``net(x, t, **cond)`` and counts its calls in ``calls`` (reset it to 0 between runs).

    A classifier-free-guided step evaluates both branches in one batched call and counts once.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x: Tensor, t: Tensor, **cond) -> Tensor:
        self.calls += 1
        return self.net(x, t, **cond)
