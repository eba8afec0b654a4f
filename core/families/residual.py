"""Invertible residual flows and implicit flows.

- :class:`ResidualFlow` (Chen et al. 2019, "Residual Flows"): blocks y = x + g(x) with Lip(g) < 1
  (spectrally normalised convolutions, 1-Lipschitz ELU), log|det(I + J_g)| by the unbiased power
  series with Russian-roulette truncation and Hutchinson trace estimates
  (:func:`residual_logdet`), inverse by fixed-point iteration.
- :class:`ImpFlow` (Lu et al. 2021, "Implicit Normalizing Flows"): blocks defined implicitly by
  y + g_y(y) = x + g_x(x) with both g contractive; the forward pass solves for y by fixed-point
  or Broyden iterations (:func:`solve_fixed_point`), the log-determinant is
  log|det(I + J_gx(x))| - log|det(I + J_gy(y))|, and gradients come from the implicit function
  theorem (:func:`implicit_solve`), never from the stored iterations.

A solve that does not reach its tolerance raises :class:`ConvergenceError` with the residual and
the iteration count.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import ModelMixin
from .densities import standard_normal_log_prob
from .flows import LogitTransform, Scaling

__all__ = [
    "ConvergenceError",
    "ImpFlow",
    "ImplicitBlock",
    "ResidualBlock",
    "ResidualFlow",
    "SNConv2d",
    "exact_logdet",
    "implicit_solve",
    "residual_logdet",
    "solve_fixed_point",
]

SOLVERS = ("fixed_point", "broyden")


class ConvergenceError(RuntimeError):
    """A fixed-point / Broyden solve did not reach its tolerance."""

    def __init__(self, method: str, residual: float, iterations: int, tol: float) -> None:
        self.residual, self.iterations = residual, iterations
        super().__init__(
            f"{method} solve did not converge: relative residual {residual:.3g} after {iterations} "
            f"iterations (tolerance {tol:.3g}); the map may not be contractive"
        )


_RESTORED = -2  # SNConv2d's version marker after a state dict was loaded


class SNConv2d(nn.Module):
    """A convolution whose operator norm (on inputs of ``in_shape``) is at most ``coeff``:
    W <- W / max(1, sigma / coeff), sigma estimated by power iteration on the conv operator.
    ``n_power_iterations`` run in training mode whenever the weight has changed since the last
    run (once per optimizer step), so every call between two steps is the same function, as the
    solvers need; the estimate persists in a buffer. A fresh module's first call runs a long power
    iteration; after loading a state dict the first call in training mode runs the usual
    ``n_power_iterations`` (so a resumed run continues exactly as an uninterrupted one) and in
    evaluation mode the long one (a loaded model is evaluated with a converged estimate)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, in_shape: tuple[int, int], coeff: float = 0.97,
        n_power_iterations: int = 1,
    ) -> None:  # fmt: skip
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)
        self.coeff, self.n_iter = coeff, n_power_iterations
        u = torch.randn(1, c_in, *in_shape)
        self.register_buffer("u", u / u.norm())
        self._seen_version = -1  # the first call runs a long power iteration (not at construction)

    @torch.no_grad()
    def _power_iteration(self, n: int) -> None:
        w, u = self.conv.weight, self.u
        for _ in range(n):
            v = F.conv2d(u, w, padding=self.conv.padding)
            v = v / v.norm().clamp_min(1e-12)
            u = F.conv_transpose2d(v, w, padding=self.conv.padding)
            u = u / u.norm().clamp_min(1e-12)
        self.u.copy_(u)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "u" in state_dict:
            self._seen_version = _RESTORED

    def forward(self, x: Tensor) -> Tensor:
        if self._seen_version == -1 or (self._seen_version == _RESTORED and not self.training):
            self._power_iteration(30)
            self._seen_version = self.conv.weight._version
        elif self.training and self.conv.weight._version != self._seen_version:
            self._power_iteration(self.n_iter)
            self._seen_version = self.conv.weight._version
        sigma = F.conv2d(self.u, self.conv.weight, padding=self.conv.padding).norm()
        w = self.conv.weight / torch.clamp(sigma / self.coeff, min=1.0)
        return F.conv2d(x, w, self.conv.bias, padding=self.conv.padding)


def _lipschitz_net(c: int, hidden: int, hw: tuple[int, int], coeff: float) -> nn.Module:
    return nn.Sequential(
        SNConv2d(c, hidden, 3, hw, coeff), nn.ELU(), SNConv2d(hidden, hidden, 1, hw, coeff), nn.ELU(),
        SNConv2d(hidden, c, 3, hw, coeff),
    )  # fmt: skip


def residual_logdet(
    g: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    n_exact: int = 2,
    p: float = 0.5,
    hutchinson: bool = True,
    create_graph: bool | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """g(x) and an unbiased estimate of log det(I + J_g(x)) (B,) for Lip(g) < 1.

    log det(I + J) = sum_k (-1)^(k+1) tr(J^k) / k. The first ``n_exact`` terms are always taken;
    N ~ Geometric(p) further terms (P(N >= j) = (1 - p)^j) are taken with term n_exact + j
    reweighted by 1 / P(N >= j) (Russian roulette), so the truncation is unbiased. tr(J^k) is
    estimated by Hutchinson's v^T J^k v with v ~ N(0, I) (one probe per example), computed with
    k vector-Jacobian products; ``hutchinson=False`` takes exact traces (D probes; small D only).
    ``create_graph`` (default: grad mode) keeps the graph so the estimate can be differentiated.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"roulette probability p must be in (0, 1), got {p}")
    if create_graph is None:
        create_graph = torch.is_grad_enabled()
    u = torch.rand((), generator=generator).item()
    extra = int(math.floor(math.log(max(u, 1e-300)) / math.log(1.0 - p)))
    n_terms = n_exact + extra
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_()
        gx = g(x)
        if hutchinson:
            probes = [torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)]
        else:
            d = x[0].numel()
            eye = torch.eye(d, dtype=x.dtype, device=x.device)
            probes = [eye[i].reshape(x.shape[1:]).expand_as(x) for i in range(d)]
        total = x.new_zeros(x.shape[0])
        for v in probes:
            w = v
            for k in range(1, n_terms + 1):
                (w,) = torch.autograd.grad(gx, x, w, retain_graph=True, create_graph=create_graph)
                coef = (-1.0) ** (k + 1) / k
                if k > n_exact:
                    coef /= (1.0 - p) ** (k - n_exact)
                total = total + coef * (w * v).flatten(1).sum(1)
    if not create_graph:
        gx, total = gx.detach(), total.detach()
    return gx, total


def exact_logdet(g: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """log|det(I + J_g(x_b))| (B,) from the full Jacobian of each example (small inputs only)."""
    out = []
    for xb in x:
        jac = torch.autograd.functional.jacobian(lambda z: g(z.unsqueeze(0))[0], xb)
        d = xb.numel()
        out.append(torch.linalg.slogdet(torch.eye(d, dtype=x.dtype) + jac.reshape(d, d))[1])
    return torch.stack(out)


def _rel_residual(r: Tensor, z: Tensor) -> float:
    r, z = r.detach(), z.detach()
    return float((r.flatten(1).norm(dim=1) / (z.flatten(1).norm(dim=1) + 1e-8)).max())


@torch.no_grad()
def solve_fixed_point(
    g: Callable[[Tensor], Tensor], z: Tensor, *, method: str = "fixed_point", tol: float = 1e-5,
    max_iter: int = 100, y0: Tensor | None = None,
) -> tuple[Tensor, int]:  # fmt: skip
    """Solve y + g(y) = z for y (same shape as z); returns (y, iterations).

    ``fixed_point`` iterates y <- z - g(y) (converges when Lip(g) < 1); ``broyden`` runs Broyden's
    good method with a low-rank inverse-Jacobian estimate per example. The stopping test is the
    largest relative residual |y + g(y) - z| / |z| over the batch; a solve that ends above ``tol``
    (or whose residual turns non-finite) raises :class:`ConvergenceError`.
    """
    if method not in SOLVERS:
        raise ValueError(f"unknown solver {method!r}; expected one of {SOLVERS}")
    y = z.clone() if y0 is None else y0.clone()
    r = y + g(y) - z
    res = _rel_residual(r, z)
    if method == "fixed_point":
        for it in range(1, max_iter + 1):
            if res <= tol:
                return y, it - 1
            if not math.isfinite(res):
                raise ConvergenceError(method, res, it - 1, tol)
            y = z - g(y)
            r = y + g(y) - z
            res = _rel_residual(r, z)
        if res <= tol:
            return y, max_iter
        raise ConvergenceError(method, res, max_iter, tol)
    us, vs = [], []  # inverse Jacobian estimate H = I + sum_i u_i v_i^T (per example)
    f = r.flatten(1)
    yf = y.flatten(1)

    def apply_h(x: Tensor) -> Tensor:
        out = x
        for u, v in zip(us, vs, strict=True):
            out = out + u * (v * x).sum(1, keepdim=True)
        return out

    def apply_ht(x: Tensor) -> Tensor:
        out = x
        for u, v in zip(us, vs, strict=True):
            out = out + v * (u * x).sum(1, keepdim=True)
        return out

    for it in range(1, max_iter + 1):
        if res <= tol:
            return yf.reshape(z.shape), it - 1
        if not math.isfinite(res):
            raise ConvergenceError(method, res, it - 1, tol)
        dy = -apply_h(f)
        yf = yf + dy
        y = yf.reshape(z.shape)
        f_new = (y + g(y) - z).flatten(1)
        df, f = f_new - f, f_new
        hdf = apply_h(df)
        denom = (dy * hdf).sum(1, keepdim=True)
        denom = torch.where(denom.abs() < 1e-12, torch.full_like(denom, 1e-12), denom)
        v_new = apply_ht(dy)
        us.append((dy - hdf) / denom)
        vs.append(v_new)
        res = _rel_residual(f.reshape(z.shape), z)
    if res <= tol:
        return yf.reshape(z.shape), max_iter
    raise ConvergenceError(method, res, max_iter, tol)


def implicit_solve(
    g: nn.Module, z: Tensor, *, method: str = "fixed_point", tol: float = 1e-5, max_iter: int = 100
) -> Tensor:
    """y with y + g(y) = z, differentiable by the implicit function theorem.

    The solve runs without a graph. The returned y = z - g(y*) carries the dependence on z and on
    g's parameters; a hook replaces the incoming gradient u by w solving w (I + J_g(y*)) = u, so
    dL/dz = u (I + J_g)^-1 and dL/dtheta = -u (I + J_g)^-1 dg/dtheta, exactly as for the true
    solution map. That linear system is solved by the same ``method`` as the forward pass
    (vector-Jacobian products only): Broyden's method does not need Lip(g) < 1 to converge,
    which keeps training alive while a spectral-norm estimate lags one step behind the weights.
    """
    y_star, _ = solve_fixed_point(g, z.detach(), method=method, tol=tol, max_iter=max_iter)
    if not torch.is_grad_enabled():
        return y_star
    y = z - g(y_star)
    if not y.requires_grad:
        return y
    with torch.enable_grad():
        y0 = y_star.detach().requires_grad_()
        g0 = g(y0)

    def vjp(w: Tensor) -> Tensor:
        return torch.autograd.grad(g0, y0, w, retain_graph=True)[0]

    def hook(u: Tensor) -> Tensor:
        try:
            return solve_fixed_point(vjp, u, method=method, tol=tol, max_iter=max_iter)[0]
        except ConvergenceError as err:
            name = f"implicit-gradient ({method})"
            raise ConvergenceError(name, err.residual, err.iterations, tol) from err

    y.register_hook(hook)
    return y


class ResidualBlock(nn.Module):
    """y = x + g(x) with Lip(g) <= coeff^3 < 1 on inputs (C, H, W)."""

    def __init__(self, shape: tuple[int, int, int], hidden: int, coeff: float = 0.97) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.g = _lipschitz_net(shape[0], hidden, shape[1:], coeff)

    def forward(self, x: Tensor, n_exact: int = 2, exact: bool = False) -> tuple[Tensor, Tensor]:
        if exact:
            return x + self.g(x), exact_logdet(self.g, x)
        gx, ld = residual_logdet(self.g, x, n_exact=n_exact)
        return x + gx, ld

    def inverse(self, y: Tensor, tol: float = 1e-5, max_iter: int = 300) -> Tensor:
        return solve_fixed_point(self.g, y, tol=tol, max_iter=max_iter)[0]


class ImplicitBlock(nn.Module):
    """The ImpFlow block y + g_y(y) = x + g_x(x) (both g contractive); y found by ``solver``."""

    def __init__(
        self, shape: tuple[int, int, int], hidden: int, coeff: float = 0.97, solver: str = "broyden",
        tol: float = 1e-4, max_iter: int = 60,
    ) -> None:  # fmt: skip
        super().__init__()
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; expected one of {SOLVERS}")
        self.g_x = _lipschitz_net(shape[0], hidden, shape[1:], coeff)
        self.g_y = _lipschitz_net(shape[0], hidden, shape[1:], coeff)
        self.solver, self.tol, self.max_iter = solver, tol, max_iter

    def forward(self, x: Tensor, n_exact: int = 2, exact: bool = False) -> tuple[Tensor, Tensor]:
        if exact:
            z = x + self.g_x(x)
            y = solve_fixed_point(self.g_y, z, method=self.solver, tol=1e-10, max_iter=500)[0]
            return y, exact_logdet(self.g_x, x) - exact_logdet(self.g_y, y)
        gx, ld_x = residual_logdet(self.g_x, x, n_exact=n_exact)
        y = implicit_solve(self.g_y, x + gx, method=self.solver, tol=self.tol, max_iter=self.max_iter)
        _, ld_y = residual_logdet(self.g_y, y, n_exact=n_exact)
        return y, ld_x - ld_y

    def inverse(self, y: Tensor) -> Tensor:
        z = y + self.g_y(y)
        return solve_fixed_point(self.g_x, z, method=self.solver, tol=self.tol, max_iter=4 * self.max_iter)[0]


class _ResidualImageFlow(ModelMixin):
    """logit -> squeeze to (4C, H/2, W/2) -> blocks -> per-entry scaling -> N(0, I)."""

    eval_terms = 10  # exact power-series terms when not training (the estimate stays unbiased)

    def _setup(self, data_shape, alpha: float) -> tuple[int, int, int]:
        self.data_shape = tuple(int(s) for s in data_shape)
        c, h, w = self.data_shape
        if h % 2 or w % 2:
            raise ValueError(f"data_shape {data_shape} must have even H and W (one squeeze)")
        self.logit = LogitTransform(alpha)
        inner = (4 * c, h // 2, w // 2)
        self.scaling = Scaling(inner)
        return inner

    def _check(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"this flow is built for inputs {self.data_shape}, got {tuple(x.shape[1:])} per example"
            )

    def log_prob(self, x: Tensor, exact: bool = False) -> Tensor:
        """log density (B,) in nats of x (B, C, H, W) in [0, 1): an unbiased estimate (power
        series with Russian roulette), or exact from full Jacobians (``exact=True``, small inputs)."""
        self._check(x)
        y, logdet = self.logit(x)
        y = F.pixel_unshuffle(y, 2)
        n = 2 if self.training else self.eval_terms
        for block in self.blocks:
            y, ld = block(y, n_exact=n, exact=exact)
            logdet = logdet + ld
        y, ld = self.scaling(y)
        return standard_normal_log_prob(y) + logdet + ld

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """n images (n, C, H, W) in [0, 1] (each block inverted by fixed-point iteration)."""
        c, h, w = self.data_shape
        p = next(self.parameters())
        y = self.scaling.inverse(torch.randn(n, 4 * c, h // 2, w // 2, device=p.device))
        for block in reversed(self.blocks):
            y = block.inverse(y)
        return self.logit.inverse(F.pixel_shuffle(y, 2))


class ResidualFlow(_ResidualImageFlow):
    """A residual flow of ``blocks`` :class:`ResidualBlock` on dequantised images in [0, 1)."""

    def __init__(
        self, data_shape: tuple[int, ...] | list[int] = (1, 28, 28), blocks: int = 4, hidden: int = 32,
        coeff: float = 0.97, alpha: float = 0.05,
    ) -> None:  # fmt: skip
        super().__init__()
        inner = self._setup(data_shape, alpha)
        self.blocks = nn.ModuleList(ResidualBlock(inner, hidden, coeff) for _ in range(blocks))


class ImpFlow(_ResidualImageFlow):
    """An implicit flow of ``blocks`` :class:`ImplicitBlock` (each has two residual networks, so
    it matches a :class:`ResidualFlow` of ``2 * blocks`` blocks in parameters)."""

    def __init__(
        self, data_shape: tuple[int, ...] | list[int] = (1, 28, 28), blocks: int = 2, hidden: int = 32,
        coeff: float = 0.97, alpha: float = 0.05, solver: str = "broyden", tol: float = 1e-4,
        max_iter: int = 60,
    ) -> None:  # fmt: skip
        super().__init__()
        inner = self._setup(data_shape, alpha)
        self.blocks = nn.ModuleList(
            ImplicitBlock(inner, hidden, coeff, solver, tol, max_iter) for _ in range(blocks)
        )
