"""EDM's dynamics, its noise schedule, time-dependent property regressors and the node-count law.

A molecule batch is the padded state x of shape (B, N, 3 + K + 1): positions in Å (zero centre of
mass over the real atoms), the one-hot atom type divided by 4 and the atomic number divided by 10
(EDM's feature scaling), with a (B, N) bool node mask.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from core import VPSchedule
from core.checkpoint import ModelMixin
from core.pointcloud import check_node_mask, remove_mean

from .egnn import EGNN

__all__ = [
    "BACKBONES",
    "CHARGE_SCALE",
    "ONEHOT_SCALE",
    "EDMDynamics",
    "NodeCountDistribution",
    "PropertyRegressor",
    "polynomial_schedule",
]

ONEHOT_SCALE = 4.0
CHARGE_SCALE = 10.0
BACKBONES = ("egnn", "e3nn")
POSITIONS = slice(0, 3)


def polynomial_schedule(num_steps: int = 1000, power: float = 2.0, precision: float = 1e-5) -> VPSchedule:
    """EDM's ``polynomial_2`` schedule as a discrete VP schedule of ``num_steps`` steps.

    alpha^2(t) = (1 - (t/T)^power)^2, step-wise ratios clipped below at 0.001, then
    alpha^2 <- (1 - 2 precision) alpha^2 + precision; step n (0-based) of the result is EDM's t = n + 1.
    """
    if num_steps < 2:
        raise ValueError(f"num_steps must be >= 2, got {num_steps}")
    t = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    a2 = (1 - t**power) ** 2
    a2 = torch.cat([torch.ones(1, dtype=torch.float64), a2])
    step = (a2[1:] / a2[:-1]).clamp(min=0.001, max=1.0)
    a2 = torch.cumprod(step, 0)
    a2 = (1 - 2 * precision) * a2 + precision
    ratios = torch.cat([a2[1:2], a2[2:] / a2[1:-1]])
    return VPSchedule.discrete(1 - ratios)


def _backbone(kind: str, in_f: int, out_f: int, hidden: int, layers: int) -> nn.Module:
    if kind == "egnn":
        return EGNN(in_f, out_f, hidden=hidden, layers=layers)
    if kind == "e3nn":
        from .e3nn_net import E3nnBackbone

        return E3nnBackbone(in_f, out_f, hidden=hidden, layers=layers)
    raise ValueError(f"unknown backbone {kind!r}; expected one of {BACKBONES}")


class EDMDynamics(ModelMixin, nn.Module):
    """EDM's noise-prediction network: ``net(x, t, node_mask, context=None) -> eps``.

    Args:
        num_types: K atom types. hidden, layers: backbone size (EDM on QM9: 256, 9).
        num_steps: T of the discrete schedule; the network sees t / T.
        context_dim: size of the per-molecule conditioning vector (0 = unconditional).
        backbone: ``"egnn"`` (dense EGNN) or ``"e3nn"``.

    x (B, N, 3 + K + 1), t (B,) step indices, node_mask (B, N) bool, context (B, C). Returns the
    predicted noise (B, N, 3 + K + 1): positions centred over the real atoms, zero on padding.
    """

    def __init__(
        self,
        num_types: int,
        hidden: int = 256,
        layers: int = 9,
        num_steps: int = 1000,
        context_dim: int = 0,
        backbone: str = "egnn",
    ) -> None:
        super().__init__()
        self.num_types = num_types
        self.num_steps = num_steps
        self.context_dim = context_dim
        self.state_dim = 3 + num_types + 1
        feat = num_types + 1
        self.backbone = _backbone(backbone, feat + 1 + context_dim, feat, hidden, layers)

    def forward(self, x: Tensor, t: Tensor, node_mask: Tensor, context: Tensor | None = None) -> Tensor:
        mask = check_node_mask(x, node_mask)
        if x.shape[-1] != self.state_dim:
            raise ValueError(f"expected {self.state_dim} features per atom (3 + K + 1), got {x.shape[-1]}")
        b, n, _ = x.shape
        pos, feat = x[..., :3], x[..., 3:]
        tt = (torch.as_tensor(t, dtype=x.dtype, device=x.device) / self.num_steps).reshape(-1, 1, 1)
        parts = [feat, tt.expand(b, n, 1)]
        if self.context_dim:
            if context is None or context.shape != (b, self.context_dim):
                got = None if context is None else tuple(context.shape)
                raise ValueError(
                    f"this model is conditional: context must have shape ({b}, {self.context_dim}), got {got}"
                )
            parts.append(context.to(x.dtype)[:, None, :].expand(b, n, self.context_dim))
        h_out, pos_out = self.backbone(torch.cat(parts, -1), pos, mask)
        eps = torch.cat([pos_out - pos, h_out], -1)
        return remove_mean(eps, mask, POSITIONS)


class PropertyRegressor(ModelMixin, nn.Module):
    """An invariant property predictor g(x_t, t) -> (B,) in the property's normalised units.

    Args:
        num_types: K. hidden, layers: EGNN size.
        num_steps: T of the schedule when ``time_dependent`` (the network sees t / T); a
            time-independent regressor (the evaluation classifier) ignores t.
        mean, std: the property's statistics; :meth:`predict` returns physical units.
        feature_scale: multiplies the atom-type / charge features (EDM's state scaling undone,
            so the inputs have unit size: the noisy regressor learns only then).
    """

    def __init__(
        self,
        num_types: int,
        hidden: int = 64,
        layers: int = 4,
        num_steps: int = 1000,
        time_dependent: bool = True,
        mean: float = 0.0,
        std: float = 1.0,
        backbone: str = "egnn",
    ) -> None:
        super().__init__()
        self.num_types = num_types
        self.state_dim = 3 + num_types + 1
        self.num_steps = num_steps
        self.time_dependent = time_dependent
        self.mean, self.std = float(mean), float(std)
        feat = num_types + 1 + int(time_dependent)
        self.backbone = _backbone(backbone, feat, hidden, hidden, layers)
        self.node_head = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.graph_head = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        scale = torch.tensor([ONEHOT_SCALE] * num_types + [CHARGE_SCALE])
        self.register_buffer("feature_scale", scale, persistent=False)

    def forward(self, x: Tensor, t: Tensor | None, node_mask: Tensor) -> Tensor:
        """Normalised property, shape (B,); x (B, N, 3 + K + 1), t (B,) step indices or None."""
        mask = check_node_mask(x, node_mask)
        b, n, _ = x.shape
        parts = [x[..., 3:] * self.feature_scale.to(x.dtype)]
        if self.time_dependent:
            if t is None:
                raise ValueError("a time-dependent regressor needs t")
            tt = (torch.as_tensor(t, dtype=x.dtype, device=x.device) / self.num_steps).reshape(-1, 1, 1)
            parts.append(tt.expand(b, n, 1))
        pos = remove_mean(x[..., :3], mask, POSITIONS)
        h, _ = self.backbone(torch.cat(parts, -1), pos, mask)
        h = self.node_head(h) * mask[..., None].to(h.dtype)
        return self.graph_head(h.sum(1)).squeeze(-1)

    def predict(self, x: Tensor, t: Tensor | None, node_mask: Tensor) -> Tensor:
        """The property in physical units, shape (B,)."""
        return self(x, t, node_mask) * self.std + self.mean


class NodeCountDistribution:
    """The empirical law of the number of atoms, optionally jointly with a property.

    ``sample(m, generator)`` draws m molecule indices of the reference set and returns their atom
    counts (m,) and properties (m, P): paired (n, target) draws as in EDM's conditional sampling.
    """

    def __init__(self, num_atoms: Tensor, properties: Tensor | None = None) -> None:
        self.num_atoms = torch.as_tensor(num_atoms, dtype=torch.long)
        self.properties = properties
        self.max_atoms = int(self.num_atoms.max())
        counts = torch.bincount(self.num_atoms, minlength=self.max_atoms + 1).double()
        self.probs = counts / counts.sum()

    def log_prob(self, n: Tensor) -> Tensor:
        """log p(n), shape like n (-inf outside the support)."""
        n = torch.as_tensor(n, dtype=torch.long)
        inside = (n >= 0) & (n <= self.max_atoms)
        p = torch.where(inside, self.probs[n.clamp(0, self.max_atoms)], torch.zeros((), dtype=torch.float64))
        return torch.log(p)

    def sample(self, m: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        idx = torch.randint(0, len(self.num_atoms), (m,), generator=generator)
        props = None if self.properties is None else self.properties[idx]
        return self.num_atoms[idx], props

    def entropy(self) -> float:
        p = self.probs[self.probs > 0]
        return float(-(p * p.log()).sum()) / math.log(2)
