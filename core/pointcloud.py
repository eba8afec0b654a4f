"""Masked point clouds: padded batches of sets of points with per-point features.

A batch of clouds of different sizes is one tensor ``x`` of shape (B, N_max, D) and a boolean
node mask of shape (B, N_max), True on real points. A slice of the features (e.g. the first 3,
the positions) lives in the zero-centre-of-mass subspace: its mean over the real points of each
cloud is zero. These helpers keep padding at exactly zero and the slice centred, so a diffusion
model of point clouds can use :func:`core.sample`, :mod:`core.guidance` and
:func:`core.objectives.denoising_loss` unchanged (pass the mask as ``cond`` / ``mask``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "check_node_mask",
    "masked_mean",
    "node_mask",
    "pack",
    "remove_mean",
    "unpack",
    "zero_com_noise",
    "zero_com_noise_fn",
]


def check_node_mask(x: Tensor, mask: Tensor) -> Tensor:
    """Validate a (B, N) node mask against x of shape (B, N, D); return it as bool."""
    if x.dim() != 3:
        raise ValueError(f"a point-cloud batch must have shape (B, N, D), got {tuple(x.shape)}")
    if mask.shape != x.shape[:2]:
        raise ValueError(f"node mask must have shape {tuple(x.shape[:2])} (B, N), got {tuple(mask.shape)}")
    return mask.to(device=x.device, dtype=torch.bool)


def node_mask(num_points: Tensor, n_max: int | None = None) -> Tensor:
    """Boolean (B, n_max) mask, True on the first ``num_points[b]`` points of cloud b."""
    num_points = torch.as_tensor(num_points, dtype=torch.long)
    n_max = int(num_points.max()) if n_max is None else n_max
    if int(num_points.max()) > n_max:
        raise ValueError(f"a cloud has {int(num_points.max())} points but n_max is {n_max}")
    return torch.arange(n_max, device=num_points.device)[None] < num_points[:, None]


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over the real points, shape (B, 1, D); a cloud with no points gets zero."""
    mask = check_node_mask(x, mask)
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1.0)


def remove_mean(x: Tensor, mask: Tensor, features: slice = slice(0, 3)) -> Tensor:
    """Centre ``x[..., features]`` over each cloud's real points and zero the padding.

    This is the orthogonal projection onto the zero-centre-of-mass subspace of that slice
    (the other features are only masked). Shape (B, N, D) in and out.
    """
    mask = check_node_mask(x, mask)
    m = mask.to(x.dtype)[..., None]
    part = x[..., features]
    centred = part - masked_mean(part, mask)
    out = x.clone()
    out[..., features] = centred
    return out * m


def zero_com_noise(
    shape: Sequence[int],
    mask: Tensor,
    features: slice = slice(0, 3),
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard Gaussian noise on the masked subspace: zero on padding, ``features`` centred.

    ``shape`` is (B, N, D). On the centred slice of a cloud with n points the noise is standard
    normal within the (n - 1)-dimensional subspace per coordinate (EDM's zero-CoM Gaussian).
    """
    noise = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=mask.device)
    return remove_mean(noise, mask, features)


def zero_com_noise_fn(mask_key: str = "node_mask", features: slice = slice(0, 3)):
    """A ``core.sample`` ``noise_fn`` drawing :func:`zero_com_noise` with the mask in ``cond[mask_key]``."""

    def noise_fn(like: Tensor, generator: torch.Generator | None = None, **cond) -> Tensor:
        if mask_key not in cond:
            raise ValueError(f"zero-CoM noise needs cond[{mask_key!r}]; got keys {sorted(cond)}")
        mask = cond[mask_key].to(like.device)
        return zero_com_noise(like.shape, mask, features, generator=generator, dtype=like.dtype)

    return noise_fn


def pack(clouds: Sequence[Tensor], n_max: int | None = None) -> tuple[Tensor, Tensor]:
    """Pad a list of (n_i, D) tensors into x of shape (B, n_max, D) and its (B, n_max) mask."""
    if not clouds:
        raise ValueError("pack needs at least one point cloud")
    d = clouds[0].shape[-1]
    for i, c in enumerate(clouds):
        if c.dim() != 2 or c.shape[1] != d:
            raise ValueError(f"cloud {i} has shape {tuple(c.shape)}; expected (n, {d})")
    sizes = torch.tensor([c.shape[0] for c in clouds])
    width = int(sizes.max()) if n_max is None else n_max
    if int(sizes.max()) > width:
        raise ValueError(
            f"cloud {int(sizes.argmax())} has {int(sizes.max())} points, more than n_max = {width}"
        )
    x = clouds[0].new_zeros(len(clouds), width, d)
    for i, c in enumerate(clouds):
        x[i, : c.shape[0]] = c
    return x, node_mask(sizes, width).to(x.device)


def unpack(x: Tensor, mask: Tensor) -> list[Tensor]:
    """The inverse of :func:`pack`: one (n_i, D) tensor per cloud (its real points, in order)."""
    mask = check_node_mask(x, mask)
    return [x[b][mask[b]] for b in range(x.shape[0])]
