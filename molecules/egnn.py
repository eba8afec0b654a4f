"""E(n)-equivariant graph networks on dense all-pairs molecule batches (EDM's EGNN).

Shapes: positions x (B, N, 3) in Å, node features h (B, N, F), node mask (B, N) bool. Every
real atom talks to every other real atom (no cut-off: QM9 molecules have at most 29 atoms).

Two layouts compute the same function with the same parameters:

* :class:`EGNN` (dense): pair tensors (B, N, N, H). The first linear layers of the edge and
  coordinate MLPs on [h_i, h_j, d_ij^2, d0_ij^2] are split into per-node parts, so their cost is
  O(N H^2) instead of O(N^2 H^2); attention-weighted messages are summed as one batched
  product, and activations act in place while sampling.
* ``EGNN(..., layout="edges")``: an edge list of the real pairs, gathered node features, the
  edge and coordinate MLPs on the concatenations, and ``torch_geometric.utils.scatter`` sums
  (the usual message passing implementation), for the speed comparison.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EGNN", "EGNNLayer", "edge_mask", "pair_geometry"]

_LAYOUTS = ("dense", "edges")


def _silu(x: Tensor) -> Tensor:
    """SiLU, in place when no gradient is being recorded (sampling): one pass less over pair tensors."""
    return F.silu(x, inplace=not torch.is_grad_enabled())


def edge_mask(mask: Tensor) -> Tensor:
    """(B, N, N) bool: both atoms real and i != j."""
    n = mask.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=mask.device)
    return mask[:, :, None] & mask[:, None, :] & ~eye


def pair_geometry(x: Tensor) -> tuple[Tensor, Tensor]:
    """Differences x_i - x_j (B, N, N, 3) and squared distances (B, N, N, 1)."""
    diff = x[:, :, None, :] - x[:, None, :, :]
    return diff, (diff**2).sum(-1, keepdim=True)


class EGNNLayer(nn.Module):
    """One equivariant block (EDM's GCL + equivariant update): attention-weighted messages, residual
    node update, then a tanh coordinate update from an MLP of [h_i, h_j, d_ij^2, d0_ij^2] on the
    updated node features.

    Args:
        hidden: width H of node features and messages.
        edge_features: invariant edge inputs (2: the current and the initial squared distance).
        coords_range: the coordinate update's bound per message (EDM: 15).
        norm_factor: sums over neighbours are divided by this (EDM: 1).
        norm_constant: distance offset in the coordinate update's normalisation (EDM: 1).
    """

    def __init__(
        self,
        hidden: int,
        edge_features: int = 2,
        coords_range: float = 15.0,
        norm_factor: float = 1.0,
        norm_constant: float = 1.0,
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.edge_in = nn.Linear(2 * hidden + edge_features, hidden)
        self.edge_out = nn.Linear(hidden, hidden)
        self.att = nn.Linear(hidden, 1)
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.coord_in = nn.Linear(2 * hidden + edge_features, hidden)
        self.coord_hidden = nn.Linear(hidden, hidden)
        self.coord_out = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(self.coord_out.weight, gain=0.001)
        self.coords_range = coords_range
        self.norm_factor = norm_factor
        self.norm_constant = norm_constant

    def _pair_linear(self, linear: nn.Linear, h: Tensor, d2: Tensor, e0: Tensor) -> Tensor:
        """``linear`` on [h_i, h_j, d_ij^2, d0_ij^2] for every pair (B, N, N, H), computed per node:
        O(N H^2) instead of O(N^2 H^2), and written once (the distance terms are added in place)."""
        hid = self.hidden
        w = linear.weight
        hi = F.linear(h, w[:, :hid], linear.bias)
        hj = F.linear(h, w[:, hid : 2 * hid])
        pre = hi[:, :, None] + hj[:, None]
        return pre.addcmul_(d2, w[:, 2 * hid]).addcmul_(e0, w[:, 2 * hid + 1])

    def _messages(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        """Messages m (..., H) and their attention weights (..., 1) from the edge MLP's first layer."""
        m = _silu(self.edge_out(_silu(pre)))
        return m, torch.sigmoid(self.att(m))

    def _coord_weight(self, pre: Tensor, dist2: Tensor) -> Tensor:
        """Per-pair weight (..., 1) of x_i - x_j in the coordinate update, bounded by ``coords_range``."""
        c = self.coord_out(_silu(self.coord_hidden(_silu(pre))))
        return torch.tanh(c) * self.coords_range / ((dist2 + 1e-8).sqrt() + self.norm_constant)

    def forward(
        self, h: Tensor, x: Tensor, e0: Tensor, emask: Tensor, nmask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Dense step: h (B, N, H), x (B, N, 3), e0 (B, N, N, 1) initial d^2, masks (B, N, N) / (B, N)."""
        diff, d2 = pair_geometry(x)
        em = emask[..., None].to(h.dtype)
        m, att = self._messages(self._pair_linear(self.edge_in, h, d2, e0))
        # sum_j att_ij m_ij as one batched product: (B, N, 1, N) @ (B, N, N, H)
        agg = ((att * em).transpose(-2, -1) @ m).squeeze(-2) / self.norm_factor
        nm = nmask[..., None].to(h.dtype)
        h = (h + self.node_mlp(torch.cat([h, agg], -1))) * nm
        w = self._coord_weight(self._pair_linear(self.coord_in, h, d2, e0), d2) * em
        x = (x + (diff * w).sum(2) / self.norm_factor) * nm
        return h, x

    def forward_edges(
        self, h: Tensor, x: Tensor, e0: Tensor, rows: Tensor, cols: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Edge-list step: h (V, H), x (V, 3), e0 (E, 1), rows/cols (E,) over the real atoms."""
        from torch_geometric.utils import scatter

        diff = x[rows] - x[cols]
        d2 = (diff**2).sum(-1, keepdim=True)
        m, att = self._messages(self.edge_in(torch.cat([h[rows], h[cols], d2, e0], -1)))
        v = h.shape[0]
        agg = scatter(m * att, rows, dim=0, dim_size=v, reduce="sum") / self.norm_factor
        h = h + self.node_mlp(torch.cat([h, agg], -1))
        w = self._coord_weight(self.coord_in(torch.cat([h[rows], h[cols], d2, e0], -1)), d2)
        x = x + scatter(diff * w, rows, dim=0, dim_size=v, reduce="sum") / self.norm_factor
        return h, x


class EGNN(nn.Module):
    """A stack of :class:`EGNNLayer`: (h_in, x) -> (h_out, x_out), E(n)-equivariant in x.

    Args:
        in_features: node input features F_in.
        out_features: node output features F_out.
        hidden: width H. layers: number of equivariant blocks.
        layout: ``"dense"`` (default) or ``"edges"``; same parameters, same function.

    ``forward(h, x, mask)`` takes h (B, N, F_in), x (B, N, 3), mask (B, N) bool and returns
    h_out (B, N, F_out) and x_out (B, N, 3), both zero on padding.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = 256,
        layers: int = 9,
        layout: str = "dense",
        coords_range: float = 15.0,
        norm_factor: float = 1.0,
    ) -> None:
        super().__init__()
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
        self.layout = layout
        self.embed = nn.Linear(in_features, hidden)
        self.blocks = nn.ModuleList(
            EGNNLayer(hidden, coords_range=coords_range / layers, norm_factor=norm_factor)
            for _ in range(layers)
        )
        self.out = nn.Linear(hidden, out_features)

    def forward(self, h: Tensor, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if self.layout == "edges":
            return self._forward_edges(h, x, mask)
        nm = mask[..., None].to(h.dtype)
        emask = edge_mask(mask)
        _, e0 = pair_geometry(x)
        h = self.embed(h) * nm
        for block in self.blocks:
            h, x = block(h, x, e0, emask, mask)
        return self.out(h) * nm, x

    def _forward_edges(self, h: Tensor, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        b, n = mask.shape
        flat = mask.reshape(-1)
        node_ids = torch.nonzero(flat).squeeze(1)
        new_index = torch.full((b * n,), -1, dtype=torch.long, device=mask.device)
        new_index[node_ids] = torch.arange(node_ids.numel(), device=mask.device)
        bi, ii, jj = torch.nonzero(edge_mask(mask), as_tuple=True)
        rows, cols = new_index[bi * n + ii], new_index[bi * n + jj]
        hv = self.embed(h.reshape(b * n, -1)[node_ids])
        xv = x.reshape(b * n, 3)[node_ids]
        e0 = ((xv[rows] - xv[cols]) ** 2).sum(-1, keepdim=True)
        for block in self.blocks:
            hv, xv = block.forward_edges(hv, xv, e0, rows, cols)
        hv = self.out(hv)
        h_out = hv.new_zeros(b * n, hv.shape[1])
        x_out = xv.new_zeros(b * n, 3)
        h_out[node_ids] = hv
        x_out[node_ids] = xv
        return h_out.reshape(b, n, -1), x_out.reshape(b, n, 3)
