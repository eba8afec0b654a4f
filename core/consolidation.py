"""Parameter protection for continual learning: EWC and Synaptic Intelligence.

* EWC (Kirkpatrick et al. 2017): after a task, a diagonal Fisher information ``F`` and the
  parameters ``theta*`` are stored; later tasks add ``lambda / 2 * sum_i F_i (theta_i - theta*_i)^2``.
  Online form: the Fishers of successive tasks are summed and the anchor is the latest ``theta*``.
  :func:`predictive_fisher` computes the Fisher of a classifier under its *own* predictive
  distribution, ``E_x sum_y p(y|x) (d log p(y|x) / d theta)^2`` exactly (not from true labels,
  whose gradients vanish on a well-fitted task); :func:`sample_fisher` takes any per-sample
  loss (e.g. a generator's or a critic's) and averages its squared per-sample gradients.
* SI (Zenke, Poole, Ganguli 2017): while training, ``omega_i += -g_i * delta theta_i`` per
  optimizer step (the path integral of the loss decrease credited to each parameter); at the end
  of a task ``Omega_i += omega_i / (Delta_i^2 + xi)`` with ``Delta_i`` the parameter's total move
  over the task; later tasks add ``c * sum_i Omega_i (theta_i - theta*_i)^2``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

__all__ = ["EWC", "SynapticIntelligence", "predictive_fisher", "sample_fisher"]


def _trainable(module: nn.Module) -> dict[str, Tensor]:
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def sample_fisher(
    module: nn.Module,
    per_sample_loss: Callable[..., Tensor],
    *inputs: Tensor,
    batch_size: int = 128,
    vectorized: bool = True,
) -> dict[str, Tensor]:
    """Mean over samples of the squared per-sample gradient of ``per_sample_loss``.

    ``per_sample_loss(call, *rows)`` receives ``call`` (the module as a function of its inputs)
    and one row of each tensor in ``inputs``, each with a leading batch dimension of 1, and
    returns a scalar. ``inputs`` are tensors (N, ...) with the same N >= 1. Per-sample gradients
    are vectorised with ``torch.func.vmap``; ``vectorized=False`` loops over the samples instead
    (for modules with data-dependent checks that vmap cannot trace). Returns
    ``{name: (param shape)}`` for every trainable parameter.
    """
    if not inputs or inputs[0].dim() < 1 or inputs[0].shape[0] == 0:
        raise ValueError("sample_fisher needs at least one non-empty input batch (N, ...)")
    n = inputs[0].shape[0]
    if any(t.shape[0] != n for t in inputs):
        raise ValueError(f"inputs must share their first dimension, got {[tuple(t.shape) for t in inputs]}")
    params = {k: p.detach() for k, p in _trainable(module).items()}
    buffers = {k: b.detach() for k, b in module.named_buffers()}
    if not params:
        raise ValueError(f"{type(module).__name__} has no trainable parameters")

    def loss_one(p: dict[str, Tensor], *rows: Tensor) -> Tensor:
        def call(*args: Tensor, **kwargs: Tensor) -> Tensor:
            return functional_call(module, (p, buffers), args, kwargs)

        return per_sample_loss(call, *(r.unsqueeze(0) for r in rows))

    total = {k: torch.zeros_like(p) for k, p in params.items()}
    if not vectorized:
        grad_one = grad(loss_one)
        for i in range(n):
            g = grad_one(params, *(t[i] for t in inputs))
            for k in total:
                total[k] += g[k].pow(2)
        return {k: t / n for k, t in total.items()}
    in_dims = (None,) + (0,) * len(inputs)
    grads_fn = vmap(grad(loss_one), in_dims=in_dims, randomness="different")
    for start in range(0, n, batch_size):
        g = grads_fn(params, *(t[start : start + batch_size] for t in inputs))
        for k in total:
            total[k] += g[k].pow(2).sum(0)
    return {k: t / n for k, t in total.items()}


def predictive_fisher(
    model: nn.Module, inputs: Tensor, *, batch_size: int = 128, head: Callable[[Tensor], Tensor] | None = None
) -> dict[str, Tensor]:
    """Diagonal Fisher of a classifier under its own predictive distribution.

    ``F = mean_x sum_y p(y|x) (d log p(y|x) / d theta)^2`` with ``p = softmax(logits)``, the
    expectation over y taken exactly (one gradient per class). ``model(x)`` returns logits
    (B, C), or ``head`` maps the model's output to logits (e.g. the class head of a critic that
    returns a tuple). ``inputs``: (N, ...). Returns ``{name: (param shape)}``.
    """
    if inputs.dim() < 2 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty batch (N, ...), got shape {tuple(inputs.shape)}")

    def logits_of(out: Tensor) -> Tensor:
        return head(out) if head is not None else out

    with torch.no_grad():
        probs = torch.cat(
            [
                logits_of(model(inputs[s : s + batch_size])).softmax(-1)
                for s in range(0, len(inputs), batch_size)
            ]
        )
    if probs.dim() != 2:
        raise ValueError(f"the classifier must return logits (B, C), got shape {tuple(probs.shape)}")
    n, num_classes = probs.shape
    xs = inputs.repeat_interleave(num_classes, 0)
    ys = torch.arange(num_classes, device=inputs.device).repeat(n)
    # Mean over the n*C (x, y) pairs of w * g^2 with w = C p(y|x): sum over y, mean over x.
    scale = (probs.reshape(-1) * num_classes).sqrt()

    def loss(call: Callable[..., Tensor], x: Tensor, y: Tensor, s: Tensor) -> Tensor:
        logp = logits_of(call(x)).log_softmax(-1)
        return s[0] * logp.gather(1, y.unsqueeze(1))[0, 0]

    return sample_fisher(model, loss, xs, ys, scale, batch_size=batch_size)


class EWC:
    """Online elastic weight consolidation of one module.

    ``consolidate(fisher)`` adds a task's Fisher to the running sum and anchors the current
    parameters; ``penalty()`` is ``weight / 2 * sum F (theta - theta*)^2`` (0 before any task).
    """

    def __init__(self, module: nn.Module, weight: float) -> None:
        if weight < 0:
            raise ValueError(f"EWC weight must be >= 0, got {weight}")
        self.module, self.weight = module, float(weight)
        self.fisher: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}

    def consolidate(self, fisher: dict[str, Tensor]) -> None:
        params = _trainable(self.module)
        missing = sorted(set(params) - set(fisher))
        if missing:
            raise ValueError(f"Fisher lacks parameters {missing[:5]} of {type(self.module).__name__}")
        for n, p in params.items():
            if fisher[n].shape != p.shape:
                raise ValueError(
                    f"Fisher of {n} has shape {tuple(fisher[n].shape)}, expected {tuple(p.shape)}"
                )
            f = fisher[n].detach().to(p)
            self.fisher[n] = self.fisher[n] + f if n in self.fisher else f.clone()
            self.anchor[n] = p.detach().clone()

    def penalty(self) -> Tensor:
        params = _trainable(self.module)
        first = next(iter(params.values()))
        total = first.new_zeros(())
        if not self.fisher or self.weight == 0:
            return total
        for n, p in params.items():
            total = total + (self.fisher[n] * (p - self.anchor[n]).pow(2)).sum()
        return 0.5 * self.weight * total


class SynapticIntelligence:
    """Synaptic Intelligence of one module.

    Call :meth:`begin_task` before a task's first step, :meth:`before_step` after ``backward`` and
    before ``optimizer.step`` (it reads the gradients of the task loss without the penalty if
    called with ``task_grads``), :meth:`after_step` after ``optimizer.step``, and
    :meth:`end_task` when the task is done. ``penalty()`` is ``c * sum Omega (theta - theta*)^2``.
    """

    def __init__(self, module: nn.Module, c: float, xi: float = 0.1) -> None:
        if c < 0 or xi <= 0:
            raise ValueError(f"SI needs c >= 0 and xi > 0, got c={c}, xi={xi}")
        self.module, self.c, self.xi = module, float(c), float(xi)
        self.omega_total: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}
        self._path: dict[str, Tensor] = {}
        self._start: dict[str, Tensor] = {}
        self._prev: dict[str, Tensor] = {}
        self._grad: dict[str, Tensor] = {}

    def begin_task(self) -> None:
        params = _trainable(self.module)
        self._start = {n: p.detach().clone() for n, p in params.items()}
        self._prev = {n: p.detach().clone() for n, p in params.items()}
        self._path = {n: torch.zeros_like(p) for n, p in params.items()}

    def before_step(self, task_grads: dict[str, Tensor] | None = None) -> None:
        params = _trainable(self.module)
        if task_grads is not None:
            self._grad = {n: g.detach().clone() for n, g in task_grads.items()}
        else:
            self._grad = {
                n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                for n, p in params.items()
            }

    def after_step(self) -> None:
        if not self._path:
            raise RuntimeError("SynapticIntelligence.begin_task() must be called before training steps")
        for n, p in _trainable(self.module).items():
            now = p.detach()
            self._path[n] -= self._grad[n] * (now - self._prev[n])
            self._prev[n] = now.clone()

    def end_task(self) -> None:
        for n, p in _trainable(self.module).items():
            delta = p.detach() - self._start[n]
            omega = (self._path[n] / (delta.pow(2) + self.xi)).clamp_min(0.0)
            self.omega_total[n] = self.omega_total[n] + omega if n in self.omega_total else omega
            self.anchor[n] = p.detach().clone()
        self._path = {}

    def penalty(self) -> Tensor:
        params = _trainable(self.module)
        total = next(iter(params.values())).new_zeros(())
        if not self.omega_total or self.c == 0:
            return total
        for n, p in params.items():
            total = total + (self.omega_total[n] * (p - self.anchor[n]).pow(2)).sum()
        return self.c * total
