"""Continual learners, all trained by the same two loops (:func:`train_classifier`, :func:`train_gan`).

Every learner holds a single-head classifier over all classes of the scenario and exposes
``learn(task)``, ``logits(x)`` and, if it has a generator, ``replay(classes, n)``. No learner
keeps real data of a finished task except ``joint`` (the upper bound).

* ``finetune`` - plain training on each task in turn (lower bound).
* ``joint`` - training on the union of all tasks seen so far (upper bound).
* ``ewc`` - online EWC, Fisher from the classifier's own predictive distribution.
* ``si`` - Synaptic Intelligence.
* ``dgr`` - Deep Generative Replay (Shin et al. 2017): an unconditional WGAN-GP generator trained
  on real + replayed data, replayed images labelled by the previous solver.
* ``mergan`` - MeRGAN with replay alignment (Wu et al. 2018): a class-conditional WGAN-GP
  generator on the current classes whose outputs for earlier classes are held to the previous
  generator's for the same (z, y); the classifier is trained on real + conditionally replayed data.
* ``tmn`` - Triple-Memory Networks (Wang et al. 2021): a conditional generator (hippocampus)
  protected by learned per-task masks on its hidden units (DGMw's hard attention, as in TMN's
  public code; ``tmn_generator="ewc"``: trained on real + replayed data under EWC instead), a
  WGAN-GP critic with an auxiliary class head (prefrontal cortex) trained on real and replayed
  data under EWC, and a classifier (neocortex) trained on real + replayed data and distilled from
  the critic's head under EWC.
  Ablations: ``tmn-no-generator`` (no replay), ``tmn-no-critic-head`` (a projection critic
  without class head and no distillation), ``tmn-no-classifier`` (predict with the critic's head).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.consolidation import EWC, SynapticIntelligence, predictive_fisher, sample_fisher
from core.families.acwgan import ClassHeadCritic, acwgan_critic_loss, acwgan_generator_loss
from core.families.gan import MLPCritic, MLPGenerator, gradient_penalty

from .scenarios import Split, Task

__all__ = ["METHODS", "MethodConfig", "Learner", "make_learner", "train_classifier", "train_gan"]


TMN_GENERATORS = ("masks", "growing-masks", "ewc")
TMN_CRITICS = ("ac", "ac-projection")


@dataclass
class MethodConfig:
    """Sizes and hyper-parameters shared by all methods (steps are per task; the defaults are the
    ``quick`` benchmark's). EWC weights multiply the mean per-sample Fisher. ``tmn_generator``:
    how TMN protects its generator, ``"masks"`` (per-task hard-attention masks, sparsity weight
    ``tmn_mask_sparsity``), ``"growing-masks"`` (the same, and every hidden layer grows before a
    task so that it has ``generator_hidden`` free units, as DGMw) or ``"ewc"`` (weight
    ``tmn_generator_ewc``). ``tmn_critic``: ``"ac"`` (class head beside an unconditional score) or
    ``"ac-projection"`` (the score also conditioned on the label by projection).
    ``generator_hidden``: the generators' width (default ``hidden``)."""

    hidden: int = 128
    generator_hidden: int | None = None
    latent_dim: int = 64
    batch_size: int = 64
    classifier_steps: int = 400
    lr: float = 1e-3
    gan_steps: int = 400
    n_critic: int = 2
    gan_lr: float = 5e-4
    gp: float = 10.0
    ewc_lambda: float = 1e3
    si_c: float = 1.0
    si_xi: float = 0.1
    fisher_samples: int = 64
    tmn_critic_ewc: float = 1e4
    tmn_classifier_ewc: float = 1000.0
    tmn_generator: str = "masks"
    tmn_critic: str = "ac"
    tmn_generator_ewc: float = 100.0
    tmn_mask_sparsity: float = 0.75
    cls_weight: float = 1.0
    distill_temperature: float = 2.0
    distill_weight: float = 3.0
    replay_alignment: float = 10.0

    def __post_init__(self) -> None:
        kinds = {"int": int, "int | None": int, "float": (int, float), "str": str}
        for f in fields(self):
            value, kind = getattr(self, f.name), kinds[f.type]
            if not (value is None and f.type == "int | None") and (
                not isinstance(value, kind) or isinstance(value, bool)
            ):
                raise ValueError(f"MethodConfig.{f.name} must be {f.type}, got {value!r}")
        for name in ("hidden", "latent_dim", "batch_size", "classifier_steps", "n_critic"):
            if getattr(self, name) < 1:
                raise ValueError(f"MethodConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.generator_hidden is not None and self.generator_hidden < 1:
            raise ValueError(
                f"MethodConfig.generator_hidden must be >= 1 or None, got {self.generator_hidden}"
            )
        if self.gan_steps < 0:
            raise ValueError(f"MethodConfig.gan_steps must be >= 0, got {self.gan_steps}")
        if self.tmn_critic not in TMN_CRITICS:
            raise ValueError(f"MethodConfig.tmn_critic must be one of {TMN_CRITICS}, got {self.tmn_critic!r}")
        if self.tmn_generator not in TMN_GENERATORS:
            raise ValueError(
                f"MethodConfig.tmn_generator must be one of {TMN_GENERATORS}, got {self.tmn_generator!r}"
            )

    @property
    def gen_width(self) -> int:
        """Hidden units of the generators (``generator_hidden``, else ``hidden``)."""
        return self.hidden if self.generator_hidden is None else self.generator_hidden


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_dim, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, out_dim),
    )


def _batch(split_x: Tensor, split_y: Tensor, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    idx = torch.randint(len(split_y), (n,), generator=g)
    return split_x[idx.to(split_x.device)], split_y[idx.to(split_y.device)]


def _shares(batch: int, n_current: int, n_old: int) -> tuple[int, int]:
    """Real and replayed batch sizes giving every seen class the same share."""
    if n_old == 0:
        return batch, 0
    real = max(1, round(batch * n_current / (n_current + n_old)))
    return real, batch - real


def train_classifier(
    model: nn.Module,
    real: Split,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    g: torch.Generator,
    n_current: int,
    n_old: int = 0,
    replay: Callable[[int], tuple[Tensor, Tensor]] | None = None,
    penalty: Callable[[], Tensor] | None = None,
    teacher: Callable[[Tensor], Tensor] | None = None,
    temperature: float = 2.0,
    distill_weight: float = 1.0,
    logits_of: Callable[[Tensor], Tensor] | None = None,
    si: SynapticIntelligence | None = None,
) -> float:
    """The one classification loop: ``steps`` Adam steps of cross-entropy on batches of real data
    (B_real, ...) and replayed pairs ``replay(n)`` -> (x (n, ...), y (n,)), plus ``penalty()``
    and, with ``teacher`` (x -> logits), ``distill_weight * T^2 * KL(teacher/T || model/T)``.
    Returns the mean loss of the last 10% of steps."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    logits_of = logits_of or model
    b_real, b_old = _shares(batch_size, n_current, n_old if replay is not None else 0)
    device = next(model.parameters()).device
    tail, losses = max(1, steps // 10), []
    if si is not None:
        si.begin_task()
    for _ in range(steps):
        x, y = _batch(real.x, real.y, b_real, g)
        x, y = x.to(device), y.to(device)
        if b_old:
            xr, yr = replay(b_old)
            x, y = torch.cat([x, xr.reshape(-1, *x.shape[1:])]), torch.cat([y, yr])
        logits = logits_of(x)
        loss = F.cross_entropy(logits, y)
        if teacher is not None:
            with torch.no_grad():
                target = (teacher(x) / temperature).softmax(-1)
            kl = F.kl_div((logits / temperature).log_softmax(-1), target, reduction="batchmean")
            loss = loss + distill_weight * temperature**2 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if si is not None:
            si.before_step()  # SI credits the task loss's gradient, not the penalty's
        if penalty is not None:
            pen = penalty()
            if pen.requires_grad:
                pen.backward()
        opt.step()
        if si is not None:
            si.after_step()
        losses.append(float(loss.detach()))
    if si is not None:
        si.end_task()
    return sum(losses[-tail:]) / tail


class _ImageGenerator(nn.Module):
    """An MLP generator (z (B, latent) [, y (B,)] -> images (B, *shape) in [-1, 1] by tanh)."""

    def __init__(self, latent_dim: int, shape: tuple[int, ...], hidden: int, num_classes: int | None) -> None:
        super().__init__()
        self.shape, self.latent_dim = shape, latent_dim
        self.net = MLPGenerator(latent_dim, math.prod(shape), hidden=hidden, depth=2, num_classes=num_classes)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return torch.tanh(self.net(z, y)).reshape(-1, *self.shape)


class _MaskedGenerator(nn.Module):
    """A class-conditional MLP generator whose hidden units are gated by learned per-task masks
    (hard attention to the task, Serra et al. 2018, as in DGMw, Ostapenko et al. 2019, the
    generator of TMN's public code): z (B, latent) and y (B,) -> images (B, *shape) in [-1, 1].

    Unit i of hidden layer l is scaled by ``sigmoid(s * e_l[t(y)])`` with ``t(y)`` the task that
    introduced class y. :meth:`begin_task` fixes the classes of a new task; while it trains,
    :meth:`anneal` raises ``s`` from ``1 / s_max`` to ``s_max`` (the masks become binary) and
    :meth:`protect_gradients` zeroes the gradient of every weight that a previous task's mask uses,
    so the images of earlier classes never change; :meth:`mask_penalty` keeps the new task's masks
    sparse, leaving units free for later tasks. :meth:`end_task` adds the task's binary masks to
    the used units."""

    def __init__(
        self,
        latent_dim: int,
        shape: tuple[int, ...],
        hidden: int,
        num_classes: int,
        *,
        depth: int = 2,
        s_max: float = 400.0,
        mask_lr: float = 0.05,
        grow: bool = False,
    ) -> None:
        super().__init__()
        self.shape, self.latent_dim, self.s_max, self.mask_lr = shape, latent_dim, float(s_max), mask_lr
        self.grow, self.free_units = grow, hidden
        self.embed = nn.Embedding(num_classes, latent_dim)
        widths = [latent_dim] + [hidden] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.out = nn.Linear(hidden, math.prod(shape))
        # one mask embedding per task; a stream has at most one task per class
        self.task_embed = nn.ModuleList(nn.Embedding(num_classes, hidden) for _ in range(depth))
        for e in self.task_embed:
            nn.init.normal_(e.weight)
        self.register_buffer("class_task", torch.full((num_classes,), -1, dtype=torch.long))
        self.register_buffer("used", torch.zeros(depth, hidden))  # units taken by earlier tasks
        self.task, self.s = -1, self.s_max

    @property
    def width(self) -> int:
        """Units per hidden layer (grows with ``grow=True``)."""
        return self.used.shape[1]

    def begin_task(self, classes: tuple[int, ...]) -> None:
        self.task += 1
        self.class_task[torch.tensor(classes, device=self.class_task.device)] = self.task
        if self.grow:
            self._widen(self.free_units - int((1 - self.used).sum(1).min()))

    @torch.no_grad()
    def _widen(self, n: int) -> None:
        """Add ``n`` free units to every hidden layer (DGMw's growth). Earlier tasks' masks are
        off on them, so earlier classes are still drawn exactly as before."""
        if n <= 0:
            return

        def widen(old: nn.Linear, add_in: int, add_out: int) -> nn.Linear:
            new = nn.Linear(old.in_features + add_in, old.out_features + add_out).to(old.weight.device)
            new.weight[: old.out_features, : old.in_features] = old.weight
            new.bias[: old.out_features] = old.bias
            return new

        for i, layer in enumerate(self.layers):
            self.layers[i] = widen(layer, n if i else 0, n)
        self.out = widen(self.out, n, 0)
        for i, e in enumerate(self.task_embed):
            new = nn.Embedding(e.num_embeddings, e.embedding_dim + n).to(e.weight.device)
            nn.init.normal_(new.weight)
            new.weight[:, : e.embedding_dim] = e.weight
            new.weight[: self.task, e.embedding_dim :] = -6.0  # finished tasks never use the new units
            self.task_embed[i] = new
        self.used = torch.cat([self.used, self.used.new_zeros(len(self.layers), n)], 1)

    def anneal(self, frac: float) -> None:
        """Set the mask sharpness for training progress ``frac`` in [0, 1]."""
        self.s = 1 / self.s_max + (self.s_max - 1 / self.s_max) * frac

    def masks(self, t: Tensor, s: float | None = None) -> list[Tensor]:
        """Masks (B, hidden) of every hidden layer for task indices t (B,)."""
        s = self.s if s is None else s
        return [torch.sigmoid(s * e(t)) for e in self.task_embed]

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        t = self.class_task[y]
        if bool((t < 0).any()):
            raise ValueError(f"class(es) {sorted(set(y[t < 0].tolist()))} belong to no task begun so far")
        # earlier tasks' classes are drawn with their final, binary masks
        s = torch.where(t == self.task, self.s, self.s_max).unsqueeze(1)
        h = z * (1.0 + self.embed(y))
        for layer, e in zip(self.layers, self.task_embed, strict=True):
            h = torch.relu(layer(h)) * torch.sigmoid(s * e(t))
        return torch.tanh(self.out(h)).reshape(-1, *self.shape)

    def mask_penalty(self, weight: float) -> Tensor:
        """``weight`` x the share of the free units that the current task's masks take."""
        t = torch.tensor([self.task], device=self.used.device)
        m = torch.cat([a[0] for a in self.masks(t)])
        free = 1 - self.used.flatten()
        return weight * (m * free).sum() / free.sum().clamp_min(1.0)

    @torch.no_grad()
    def protect_gradients(self) -> None:
        """Zero the gradients of weights used by earlier tasks; scale the mask embeddings'
        gradients to the annealed sharpness (Serra et al. 2018, eq. 6). Call it between
        ``backward`` and the step of an optimizer created for this task (a momentum carried over
        from an earlier task would still move the protected weights)."""
        prev = None
        for layer, used in zip(self.layers, self.used, strict=True):
            keep_out = 1 - used
            if layer.weight.grad is not None:
                if prev is None:
                    layer.weight.grad *= keep_out.unsqueeze(1)
                else:
                    layer.weight.grad *= 1 - torch.minimum(used.unsqueeze(1), prev.unsqueeze(0))
                layer.bias.grad *= keep_out
            prev = used
        if self.out.weight.grad is not None:
            self.out.weight.grad *= 1 - prev.unsqueeze(0)
            if self.task > 0:
                self.out.bias.grad.zero_()
        if self.task > 0 and self.embed.weight.grad is not None:
            old = (self.class_task >= 0) & (self.class_task < self.task)
            self.embed.weight.grad[old] = 0
        for e in self.task_embed:
            e.weight.clamp_(-6, 6)
            if e.weight.grad is not None:
                e.weight.grad[: self.task] = 0  # earlier tasks' masks are fixed
                num = torch.cosh((self.s * e.weight).clamp(-50, 50)) + 1
                den = torch.cosh(e.weight) + 1
                e.weight.grad *= self.s_max / self.s * num / den

    def param_groups(self, lr: float) -> list[dict]:
        """Adam groups: the network at ``lr``, the mask embeddings at ``mask_lr`` (Adam's steps
        are ~lr each, and a mask must be able to cross from on to off within one task)."""
        masks = [p for e in self.task_embed for p in e.parameters()]
        ids = {id(p) for p in masks}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": rest, "lr": lr}, {"params": masks, "lr": self.mask_lr}]

    @torch.no_grad()
    def end_task(self) -> None:
        t = torch.tensor([self.task], device=self.used.device)
        binary = torch.stack([(m[0] > 0.5).float() for m in self.masks(t, self.s_max)])
        self.used.copy_(torch.maximum(self.used, binary))
        self.s = self.s_max


def train_gan(
    gen: _ImageGenerator,
    critic: nn.Module,
    real: Split,
    *,
    kind: str,
    cfg: MethodConfig,
    g: torch.Generator,
    current: tuple[int, ...],
    old: tuple[int, ...] = (),
    replay: Callable[[int], tuple[Tensor, Tensor]] | None = None,
    align_to: _ImageGenerator | None = None,
    gen_penalty: Callable[[], Tensor] | None = None,
    critic_penalty: Callable[[], Tensor] | None = None,
) -> None:
    """The one GAN loop (WGAN-GP, ``n_critic`` critic steps per generator step, Adam(0.5, 0.9)).

    ``kind``: ``"uncond"`` (critic(x)), ``"proj"`` (projection critic(x, y)) or ``"ac"``
    (:class:`ClassHeadCritic`, class loss on real and replayed data). The critic's real batch
    mixes the task's data with ``replay(n)`` pairs (old classes) in per-class proportion; the
    generator draws labels from ``current`` (+ ``old`` when replayed data trains the critic).
    ``align_to``: a frozen previous generator whose outputs on ``old`` classes the generator must
    reproduce for the same (z, y) (MeRGAN's replay alignment)."""
    if cfg.gan_steps == 0:
        return
    device = next(gen.parameters()).device
    masked = isinstance(gen, _MaskedGenerator)
    groups = gen.param_groups(cfg.gan_lr) if masked else gen.parameters()
    opt_g = torch.optim.Adam(groups, lr=cfg.gan_lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(critic.parameters(), lr=cfg.gan_lr, betas=(0.5, 0.9))
    n_old = len(old) if replay is not None else 0
    b_real, b_old = _shares(cfg.batch_size, len(current), n_old)
    labels = torch.tensor(current + (old if n_old else ()), device=device)
    # a masked generator cannot change its earlier classes: its own steps draw the current ones
    gen_labels = torch.tensor(current, device=device) if masked else labels
    old_labels = torch.tensor(old, device=device) if old else None

    def real_batch() -> tuple[Tensor, Tensor]:
        x, y = _batch(real.x, real.y, b_real, g)
        x, y = x.to(device).flatten(1), y.to(device)
        if b_old:
            xr, yr = replay(b_old)
            x, y = torch.cat([x, xr.flatten(1)]), torch.cat([y, yr])
        return x, y

    def fake_batch(n: int, pool: Tensor = labels) -> tuple[Tensor, Tensor]:
        z = torch.randn(n, gen.latent_dim, device=device)
        if kind == "uncond":
            return gen(z).flatten(1), torch.zeros(n, dtype=torch.long, device=device)
        y = pool[torch.randint(len(pool), (n,), device=device)]
        return gen(z, y).flatten(1), y

    for step in range(cfg.gan_steps):
        if masked:
            gen.anneal(step / max(1, cfg.gan_steps - 1))
        for _ in range(cfg.n_critic):
            x, y = real_batch()
            with torch.no_grad():
                fake, yf = fake_batch(x.shape[0])
            if kind == "ac":
                parts = acwgan_critic_loss(critic, x, y, fake, y_fake=yf, gp=cfg.gp, cls=cfg.cls_weight)
                loss_d = parts["loss"]
            elif kind == "proj":
                d_real, d_fake = critic(x, y), critic(fake, yf)
                loss_d = d_fake.mean() - d_real.mean() + cfg.gp * gradient_penalty(critic, x, fake, y=y)
            else:
                d_real, d_fake = critic(x), critic(fake)
                loss_d = d_fake.mean() - d_real.mean() + cfg.gp * gradient_penalty(critic, x, fake)
            if critic_penalty is not None:
                loss_d = loss_d + critic_penalty()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        fake, yf = fake_batch(cfg.batch_size, gen_labels)
        if kind == "ac":
            loss_g = acwgan_generator_loss(critic, fake, yf, cls=cfg.cls_weight)
        elif kind == "proj":
            loss_g = -critic(fake, yf).mean()
        else:
            loss_g = -critic(fake).mean()
        if align_to is not None and old_labels is not None:
            z = torch.randn(cfg.batch_size, gen.latent_dim, device=device)
            y_old = old_labels[torch.randint(len(old_labels), (cfg.batch_size,), device=device)]
            with torch.no_grad():
                target = align_to(z, y_old)
            loss_g = (
                loss_g + cfg.replay_alignment * (gen(z, y_old) - target).pow(2).flatten(1).sum(1).mean() / 100
            )
        if gen_penalty is not None:
            loss_g = loss_g + gen_penalty()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        if masked:
            gen.protect_gradients()
        opt_g.step()


class Learner:
    """Base learner: a single-head MLP classifier over ``num_classes``; subclasses override
    :meth:`learn` (and :meth:`logits`, :meth:`replay` where needed)."""

    name = "finetune"
    has_generator = False

    def __init__(
        self,
        image_shape: tuple[int, ...],
        num_classes: int,
        cfg: MethodConfig,
        device: torch.device,
        seed: int,
    ):
        self.shape, self.num_classes, self.cfg, self.device = tuple(image_shape), num_classes, cfg, device
        self.in_dim = math.prod(self.shape)
        torch.manual_seed(seed)
        self.g = torch.Generator().manual_seed(seed)
        self.classifier = _mlp(self.in_dim, cfg.hidden, num_classes).to(device)
        self.seen: tuple[int, ...] = ()

    # -- the stream ------------------------------------------------------------------------
    def learn(self, task: Task) -> None:
        self._fit(task.train, task.classes)
        self.seen = self.seen + task.classes

    def _fit(self, real: Split, current: tuple[int, ...], **kw) -> None:
        c = self.cfg
        train_classifier(
            self.classifier,
            real,
            steps=c.classifier_steps,
            batch_size=c.batch_size,
            lr=c.lr,
            g=self.g,
            n_current=len(current),
            **kw,
        )

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """Logits (B, num_classes) for images x (B, *image_shape)."""
        return self.classifier(x.to(self.device))

    def replay(self, classes: tuple[int, ...], n: int) -> Tensor | None:
        """n generated images per class (len(classes) * n, *image_shape), or None without a generator."""
        return None


class JointLearner(Learner):
    name = "joint"

    def learn(self, task: Task) -> None:
        prev = getattr(self, "_data", None)
        x = task.train.x if prev is None else torch.cat([prev.x, task.train.x])
        y = task.train.y if prev is None else torch.cat([prev.y, task.train.y])
        self._data = Split(x, y)
        self.seen = self.seen + task.classes
        self._fit(self._data, self.seen)


class EWCLearner(Learner):
    name = "ewc"

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.ewc = EWC(self.classifier, self.cfg.ewc_lambda)

    def learn(self, task: Task) -> None:
        self._fit(task.train, task.classes, penalty=self.ewc.penalty)
        self.seen = self.seen + task.classes
        x = _batch(task.train.x, task.train.y, self.cfg.fisher_samples, self.g)[0].to(self.device)
        self.ewc.consolidate(predictive_fisher(self.classifier, x))


class SILearner(Learner):
    name = "si"

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.si = SynapticIntelligence(self.classifier, self.cfg.si_c, self.cfg.si_xi)

    def learn(self, task: Task) -> None:
        self._fit(task.train, task.classes, penalty=self.si.penalty, si=self.si)
        self.seen = self.seen + task.classes


class _GenerativeLearner(Learner):
    has_generator = True
    conditional = True

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        c = self.cfg
        self.gen = _ImageGenerator(
            c.latent_dim, self.shape, c.gen_width, self.num_classes if self.conditional else None
        )
        self.gen.to(self.device)
        self.old_gen: _ImageGenerator | None = None

    def _snapshot(self) -> None:
        self.old_gen = copy.deepcopy(self.gen).eval().requires_grad_(False)

    def _cond_replay(self, old: tuple[int, ...]) -> Callable[[int], tuple[Tensor, Tensor]]:
        labels = torch.tensor(old, device=self.device)

        def draw(n: int) -> tuple[Tensor, Tensor]:
            y = labels[torch.randint(len(labels), (n,), device=self.device)]
            with torch.no_grad():
                x = self.old_gen(torch.randn(n, self.cfg.latent_dim, device=self.device), y)
            return x, y

        return draw

    @torch.no_grad()
    def replay(self, classes: tuple[int, ...], n: int) -> Tensor | None:
        z = torch.randn(len(classes) * n, self.cfg.latent_dim, device=self.device)
        if not self.conditional:
            return self.gen(z).cpu()
        y = torch.tensor(classes, device=self.device).repeat_interleave(n)
        return self.gen(z, y).cpu()


class DGRLearner(_GenerativeLearner):
    name = "dgr"
    conditional = False

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.critic = MLPCritic(self.in_dim, hidden=self.cfg.hidden).to(self.device)
        self.old_solver: nn.Module | None = None

    def learn(self, task: Task) -> None:
        old = self.seen
        replay = None
        if old:

            def replay(n: int) -> tuple[Tensor, Tensor]:
                with torch.no_grad():
                    x = self.old_gen(torch.randn(n, self.cfg.latent_dim, device=self.device))
                    return x, self.old_solver(x).argmax(-1)

        self._fit(task.train, task.classes, n_old=len(old), replay=replay)
        train_gan(
            self.gen,
            self.critic,
            task.train,
            kind="uncond",
            cfg=self.cfg,
            g=self.g,
            current=task.classes,
            old=old,
            replay=replay,
        )
        self.seen = self.seen + task.classes
        self._snapshot()
        self.old_solver = copy.deepcopy(self.classifier).eval().requires_grad_(False)


class MeRGANLearner(_GenerativeLearner):
    name = "mergan"

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.critic = MLPCritic(self.in_dim, hidden=self.cfg.hidden, num_classes=self.num_classes).to(
            self.device
        )

    def learn(self, task: Task) -> None:
        old = self.seen
        replay = self._cond_replay(old) if old else None
        self._fit(task.train, task.classes, n_old=len(old), replay=replay)
        train_gan(
            self.gen,
            self.critic,
            task.train,
            kind="proj",
            cfg=self.cfg,
            g=self.g,
            current=task.classes,
            old=old,
            align_to=self.old_gen if old else None,
        )
        self.seen = self.seen + task.classes
        self._snapshot()


class TMNLearner(_GenerativeLearner):
    """Triple-Memory Networks; the class flags switch memories off for the ablations."""

    name = "tmn"
    use_generator = True
    use_critic_head = True
    use_classifier = True

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        c = self.cfg
        self.masked = c.tmn_generator != "ewc"
        if self.masked:
            grow = c.tmn_generator == "growing-masks"
            self.gen = _MaskedGenerator(c.latent_dim, self.shape, c.gen_width, self.num_classes, grow=grow)
            self.gen.to(self.device)
        if self.use_critic_head:
            self.critic: nn.Module = ClassHeadCritic(
                self.in_dim, self.num_classes, hidden=c.hidden, projection=c.tmn_critic == "ac-projection"
            ).to(self.device)
        else:
            self.critic = MLPCritic(self.in_dim, hidden=c.hidden, num_classes=self.num_classes).to(
                self.device
            )
        self.ewc_critic = EWC(self.critic, c.tmn_critic_ewc)
        self.ewc_classifier = EWC(self.classifier, c.tmn_classifier_ewc)
        self.ewc_gen = EWC(self.gen, c.tmn_generator_ewc)

    def learn(self, task: Task) -> None:
        c, old = self.cfg, self.seen
        replay = self._cond_replay(old) if (old and self.use_generator) else None
        n_old = len(old) if replay is not None else 0
        if self.masked:
            self.gen.begin_task(task.classes)
            gen_penalty = lambda: self.gen.mask_penalty(c.tmn_mask_sparsity)  # noqa: E731
        else:
            gen_penalty = self.ewc_gen.penalty
        if self.use_critic_head and self.use_generator:
            train_gan(
                self.gen,
                self.critic,
                task.train,
                kind="ac",
                cfg=c,
                g=self.g,
                current=task.classes,
                old=old,
                replay=replay,
                gen_penalty=gen_penalty,
                critic_penalty=self.ewc_critic.penalty,
            )
        elif self.use_generator:
            train_gan(
                self.gen,
                self.critic,
                task.train,
                kind="proj",
                cfg=c,
                g=self.g,
                current=task.classes,
                old=old,
                replay=replay,
                gen_penalty=gen_penalty,
            )
        else:  # no hippocampus: the critic's head still learns the classes, without replay
            train_classifier(
                self.critic,
                task.train,
                steps=c.classifier_steps,
                batch_size=c.batch_size,
                lr=c.lr,
                g=self.g,
                n_current=len(task.classes),
                penalty=self.ewc_critic.penalty,
                logits_of=lambda x: self.critic.logits(x.flatten(1)),
            )
        if self.use_classifier:
            teacher = (lambda x: self.critic.logits(x.flatten(1))) if self.use_critic_head else None
            self._fit(
                task.train,
                task.classes,
                n_old=n_old,
                replay=replay,
                penalty=self.ewc_classifier.penalty,
                teacher=teacher,
                temperature=c.distill_temperature,
                distill_weight=c.distill_weight,
            )
        self.seen = self.seen + task.classes
        if self.masked:
            self.gen.end_task()
        self._consolidate(task, replay, n_old)
        if self.use_generator:
            self._snapshot()

    def _consolidate(self, task: Task, replay, n_old: int) -> None:
        c = self.cfg
        n = c.fisher_samples
        x = _batch(task.train.x, task.train.y, n, self.g)[0].to(self.device)
        if self.use_classifier:
            self.ewc_classifier.consolidate(predictive_fisher(self.classifier, x))
        if self.use_critic_head:
            self.ewc_critic.consolidate(predictive_fisher(self.critic, x.flatten(1), head=lambda out: out[1]))
        if self.use_generator and not self.masked:
            z = torch.randn(n, c.latent_dim, device=self.device)
            labels = torch.tensor(task.classes, device=self.device)
            y = labels[torch.randint(len(labels), (n,), device=self.device)]
            critic = self.critic

            def gen_loss(call, z1: Tensor, y1: Tensor) -> Tensor:
                out = (
                    critic(call(z1, y1).flatten(1))
                    if self.use_critic_head
                    else critic(call(z1, y1).flatten(1), y1)
                )
                return -(out[0] if isinstance(out, tuple) else out).sum()

            self.ewc_gen.consolidate(sample_fisher(self.gen, gen_loss, z, y, vectorized=False))

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        if self.use_classifier:
            return self.classifier(x.to(self.device))
        return self.critic.logits(x.to(self.device).flatten(1))

    def replay(self, classes: tuple[int, ...], n: int) -> Tensor | None:
        return super().replay(classes, n) if self.use_generator else None


class TMNNoGenerator(TMNLearner):
    name = "tmn-no-generator"
    use_generator = False


class TMNNoCriticHead(TMNLearner):
    name = "tmn-no-critic-head"
    use_critic_head = False


class TMNNoClassifier(TMNLearner):
    name = "tmn-no-classifier"
    use_classifier = False


METHODS: dict[str, type[Learner]] = {
    cls.name: cls
    for cls in (
        Learner,
        JointLearner,
        EWCLearner,
        SILearner,
        DGRLearner,
        MeRGANLearner,
        TMNLearner,
        TMNNoGenerator,
        TMNNoCriticHead,
        TMNNoClassifier,
    )
}


def make_learner(
    name: str,
    image_shape: tuple[int, ...],
    num_classes: int,
    cfg: MethodConfig,
    device: torch.device,
    seed: int,
) -> Learner:
    """A learner by method name; an unknown name lists the valid ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[name](image_shape, num_classes, cfg, device, seed)
