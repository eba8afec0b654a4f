"""An e3nn equivariant backbone with the EGNN's interface: ``(h, x, mask) -> (h_out, x_out)``.

Node states carry scalars (0e) and vectors (1o). Each layer sends a message along every real pair
(dense all-pairs, as the EGNN): the sender's state tensored with the spherical harmonics
(l = 0, 1) of the pair's direction, with weights from an MLP of the pair's distance, summed over
senders, gated (scalars SiLU, vectors scaled by sigmoid gates) and added to the receiver's state.
The output's scalars give the features and one vector per atom the position update. Slower than
the EGNN on CPU (tensor products); use it small on CPU, at full size on a GPU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .egnn import edge_mask

__all__ = ["E3nnBackbone"]


class _Layer(nn.Module):
    def __init__(self, irreps_in, scalars: int, vectors: int, radial: int) -> None:
        from e3nn import nn as enn
        from e3nn import o3

        super().__init__()
        self.sh_irreps = o3.Irreps("1x0e + 1x1o")
        gate_in = o3.Irreps(f"{scalars}x0e + {vectors}x0e + {vectors}x1o")
        self.tp = o3.FullyConnectedTensorProduct(irreps_in, self.sh_irreps, gate_in, shared_weights=False)
        self.radial = nn.Sequential(nn.Linear(radial, 64), nn.SiLU(), nn.Linear(64, self.tp.weight_numel))
        self.gate = enn.Gate(
            f"{scalars}x0e", [torch.nn.functional.silu], f"{vectors}x0e", [torch.sigmoid], f"{vectors}x1o"
        )
        self.self_lin = o3.Linear(irreps_in, self.gate.irreps_out)
        self.irreps_out = self.gate.irreps_out

    def forward(self, state: Tensor, sh: Tensor, rad: Tensor, emask: Tensor) -> Tensor:
        b, n, _ = state.shape
        sender = state[:, None, :, :].expand(b, n, n, state.shape[-1])
        msg = self.tp(sender, sh, self.radial(rad)) * emask[..., None].to(state.dtype)
        return self.self_lin(state) + self.gate(msg.sum(2))


class E3nnBackbone(nn.Module):
    """E(3)-equivariant message passing with e3nn; same call signature as :class:`~molecules.egnn.EGNN`.

    Args:
        in_features: invariant node inputs. out_features: invariant node outputs.
        hidden: scalar channels; vectors = hidden // 4. layers: message-passing layers.
        radial: Gaussian radial basis size on [0, 6] Å.
    """

    def __init__(
        self, in_features: int, out_features: int, hidden: int = 32, layers: int = 2, radial: int = 16
    ) -> None:
        from e3nn import o3

        super().__init__()
        vectors = max(1, hidden // 4)
        self.embed = nn.Linear(in_features, hidden)
        irreps = o3.Irreps(f"{hidden}x0e")
        blocks = []
        for _ in range(layers):
            layer = _Layer(irreps, hidden, vectors, radial)
            blocks.append(layer)
            irreps = layer.irreps_out
        self.blocks = nn.ModuleList(blocks)
        self.out_scalars = o3.Linear(irreps, o3.Irreps(f"{out_features}x0e"))
        self.out_vector = o3.Linear(irreps, o3.Irreps("1x1o"))
        self.register_buffer("centres", torch.linspace(0.0, 6.0, radial), persistent=False)
        self.width = 6.0 / radial

    def forward(self, h: Tensor, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        from e3nn import o3

        nm = mask[..., None].to(h.dtype)
        emask = edge_mask(mask)
        diff = x[:, :, None, :] - x[:, None, :, :]
        dist = (diff.pow(2).sum(-1, keepdim=True) + 1e-8).sqrt()
        sh = o3.spherical_harmonics(self.blocks[0].sh_irreps, diff, normalize=True, normalization="component")
        rad = torch.exp(-(((dist - self.centres) / self.width) ** 2))
        state = self.embed(h) * nm
        for block in self.blocks:
            state = block(state, sh, rad, emask) * nm
        vec = self.out_vector(state)  # e3nn's 1o basis is (x, y, z) here: D(R) = R
        return self.out_scalars(state) * nm, (x + vec) * nm
