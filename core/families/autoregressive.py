"""Autoregressive density models with exact likelihoods: the fully visible sigmoid belief net
(FVSBN), NADE (Larochelle & Murray 2011) and RNADE (Uria, Murray & Larochelle 2013).

Every model factorises p(x) = prod_d p(x_d | x_<d) over the flattened input in a fixed order and
exposes ``log_prob(x) -> (B,)`` (nats) and ``sample(n)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import ModelMixin
from .densities import check_binary

__all__ = ["FVSBN", "NADE", "RNADE", "nll_loss"]


def _flat(x: Tensor, dim: int, name: str) -> Tensor:
    x = x.flatten(1)
    if x.shape[1] != dim:
        raise ValueError(f"{name} has {dim} dimensions, got data with {x.shape[1]} per example")
    return x


class FVSBN(ModelMixin):
    """Fully visible sigmoid belief net: p(x_d = 1 | x_<d) = sigmoid(b_d + sum_{j<d} W_dj x_j).
    D(D+1)/2 effective parameters (W is masked strictly lower triangular)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.zeros(dim, dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("mask", torch.tril(torch.ones(dim, dim), diagonal=-1), persistent=False)

    def logits(self, x: Tensor) -> Tensor:
        return x @ (self.weight * self.mask).T + self.bias

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x) (B,) in nats of binary x (B, ...) with ``dim`` entries per example."""
        check_binary(x, "data given to the FVSBN")
        x = _flat(x, self.dim, "the FVSBN")
        return -F.binary_cross_entropy_with_logits(self.logits(x), x, reduction="none").sum(1)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        x = torch.zeros(n, self.dim, device=self.bias.device)
        w = self.weight * self.mask
        for d in range(self.dim):
            x[:, d] = torch.bernoulli(torch.sigmoid(x @ w[d] + self.bias[d]))
        return x


class NADE(ModelMixin):
    """NADE with shared input weights: h_d = sigmoid(c + W[:, <d] x_<d),
    p(x_d = 1 | x_<d) = sigmoid(b_d + V_d . h_d). Parameters: 2HD + H + D; the log-likelihood of a
    batch costs O(HD) per example (one cumulative sum of the input contributions)."""

    _CHUNK = 32

    def __init__(self, dim: int, hidden: int = 500) -> None:
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.W = nn.Parameter(torch.randn(hidden, dim) * 0.01)
        self.c = nn.Parameter(torch.zeros(hidden))
        self.V = nn.Parameter(torch.randn(dim, hidden) * 0.01)
        self.b = nn.Parameter(torch.zeros(dim))

    def logits(self, x: Tensor) -> Tensor:
        """Conditional logits (B, D) of x (B, D): entry d sees only x_<d."""
        out, start = [], self.c.expand(x.shape[0], -1)
        for lo in range(0, self.dim, self._CHUNK):  # blocks of d keep the (B, d, H) tensors small
            hi = min(lo + self._CHUNK, self.dim)
            contrib = x[:, lo:hi, None] * self.W.T[lo:hi]  # (B, d, H): x_d W[:, d]
            cum = torch.cumsum(contrib, dim=1)
            a = cum - contrib + start[:, None]  # exclusive prefix sums
            out.append(torch.einsum("bdh,dh->bd", torch.sigmoid(a), self.V[lo:hi]))
            start = start + cum[:, -1]
        return torch.cat(out, 1) + self.b

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x) (B,) in nats of binary x (B, ...) with ``dim`` entries per example."""
        check_binary(x, "data given to NADE")
        x = _flat(x, self.dim, "this NADE")
        return -F.binary_cross_entropy_with_logits(self.logits(x), x, reduction="none").sum(1)

    @torch.no_grad()
    def sample(self, n: int, mean_last: bool = False) -> Tensor:
        """n binary samples (n, D), drawn d = 1..D in order (O(HD) per sample)."""
        a = self.c.expand(n, -1).clone()
        x = torch.zeros(n, self.dim, device=self.b.device)
        for d in range(self.dim):
            p = torch.sigmoid(torch.sigmoid(a) @ self.V[d] + self.b[d])
            x[:, d] = p if (mean_last and d == self.dim - 1) else torch.bernoulli(p)
            a = a + x[:, d : d + 1] * self.W[:, d]
        return x


class RNADE(ModelMixin):
    """RNADE: NADE's shared hidden layer with mixture-of-Gaussians conditionals for real data.
    h_d = relu(rho_d * (c + W[:, <d] x_<d)); p(x_d | x_<d) = sum_k pi_dk N(x_d; mu_dk, sigma_dk^2)
    with (log pi, mu, log sigma) linear in h_d (per-dimension weights)."""

    def __init__(self, dim: int, hidden: int = 100, components: int = 5) -> None:
        super().__init__()
        self.dim, self.hidden, self.components = dim, hidden, components
        self.W = nn.Parameter(torch.randn(hidden, dim) * 0.05)
        self.c = nn.Parameter(torch.zeros(hidden))
        self.log_rho = nn.Parameter(torch.zeros(dim))
        self.V = nn.Parameter(torch.randn(dim, 3 * components, hidden) * 0.05)
        b = torch.zeros(dim, 3 * components)
        b[:, components : 2 * components] = torch.linspace(-1.0, 1.0, components)
        self.b = nn.Parameter(b)

    def _params(self, a: Tensor, d: Tensor | slice) -> tuple[Tensor, Tensor, Tensor]:
        # a: (B, H, D') pre-activations; returns log pi, mu, log sigma each (B, D', K)
        h = F.relu(a * self.log_rho[d].exp())
        out = torch.einsum("bhd,dkh->bdk", h, self.V[d]) + self.b[d]
        logit, mu, log_sigma = out.chunk(3, dim=-1)
        return F.log_softmax(logit, -1), mu, log_sigma.clamp(-7.0, 5.0)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log density (B,) in nats of real x (B, ...) with ``dim`` entries per example."""
        x = _flat(x, self.dim, "this RNADE")
        contrib = x.unsqueeze(1) * self.W.unsqueeze(0)
        a = torch.cumsum(contrib, dim=2) - contrib + self.c[None, :, None]
        log_pi, mu, log_sigma = self._params(a, slice(None))
        z = (x.unsqueeze(-1) - mu) * torch.exp(-log_sigma)
        comp = -0.5 * z.pow(2) - log_sigma - 0.5 * math.log(2 * math.pi)
        return torch.logsumexp(log_pi + comp, dim=-1).sum(1)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        a = self.c.expand(n, -1).clone()
        x = torch.zeros(n, self.dim, device=self.c.device)
        for d in range(self.dim):
            log_pi, mu, log_sigma = self._params(a.unsqueeze(-1), slice(d, d + 1))
            k = torch.multinomial(log_pi[:, 0].exp(), 1)
            m, s = mu[:, 0].gather(1, k)[:, 0], log_sigma[:, 0].gather(1, k)[:, 0].exp()
            x[:, d] = m + s * torch.randn_like(m)
            a = a + x[:, d : d + 1] * self.W[:, d]
        return x


def nll_loss(model: nn.Module, batch: Tensor | tuple | list) -> dict[str, Tensor]:
    """Mean negative log-likelihood (nats per example) of any model with ``log_prob``, for
    ``core.Trainer``; ``batch`` is x or (x, ...)."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return {"loss": -model.log_prob(x).mean()}
