"""The classic families of :mod:`core.families` as image families of the pipeline: one registry
maps each family to its data transform, model, objective, sampler and likelihood.

=============  ===========  =========================================================================
family         data         model / objective (``core.families``)
=============  ===========  =========================================================================
``vae``        binary       Bernoulli :class:`VAE` (MLP or conv), negative ELBO
``iwae``       binary       the same VAE, negative K-sample bound (K = ``iwae_k``)
``nade``       binary       :class:`NADE` (hidden units = ``width``), exact NLL
``realnvp``    dequantised  multi-scale :class:`RealNVP` (2 scales, ``depth`` couplings per group)
``vflow``      dequantised  :class:`VFlow` (one augmented channel), its ELBO
``impflow``    dequantised  :class:`ImpFlow` (``depth`` implicit blocks), unbiased NLL estimate
``gan``        signed       DCGAN-style conv generator and critic, non-saturating loss
``wgan_gp``    signed       the same networks, WGAN with gradient penalty, 5 critic steps
``clc_gan``    signed       the same networks, WGAN loss with CLC-GAN's closed-loop control
``triple_gan`` signed       classifier, conditional generator, pair discriminator; ``labels``
                            labelled images (balanced over classes), the rest unlabelled
=============  ===========  =========================================================================

Data transforms of the training and test images (float (N, C, H, W) in [-1, 1]):

- ``binary``: static binarisation (``core.data.binarize``, seed 0 for the training split and 1
  for the test split, as ``core.data.load_binarized_fashion_mnist``); values {0, 1}.
- ``dequantised``: the 8-bit levels 0..255 (the images must lie on that grid: a resized dataset
  does not), dequantised afresh in every training step (uniform noise, ``core.families.dequantize``)
  into [0, 1); bits/dim are of the discrete 8-bit data.
- ``signed``: the images as they are.

Samples are returned in [-1, 1] whatever the family's own range (Bernoulli means and NADE's
binary draws map {0, 1} -> {-1, 1}).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from core.checkpoint import ModelMixin
from core.data import binarize, to_uint8
from core.families import (
    GAN,
    GAN_FAMILIES,
    NADE,
    VAE,
    ConvClassifier,
    ConvCritic,
    ConvGenerator,
    GANGame,
    ImpFlow,
    RealNVP,
    TripleGAN,
    TripleGANGame,
    VFlow,
    bits_per_dim,
    dequantize,
    flow_nll_loss,
    iwae_loss,
    log_likelihood,
    nll_loss,
    vae_loss,
)
from core.training import Game

from .datasets import balanced_labels, check_labels

if TYPE_CHECKING:
    from .config import ImageConfig

__all__ = [
    "CLASSIC_FAMILIES",
    "DATA_KINDS",
    "DIRECT",
    "ClassicFamily",
    "ImageGAN",
    "ImageTripleGAN",
    "classic_scores",
    "prepare_images",
    "sample_classic",
]

#: The sampling method name of the classic families (one pass of the generator / decoder /
#: inverse flow, or NADE's pixel-by-pixel draws): they have no solver, steps or guidance.
DIRECT = "direct"
DATA_KINDS = ("binary", "dequantised", "signed")
_SPLIT_SEED = {"train": 0, "test": 1}


# --- models that save as pretrained folders ------------------------------------------------------
class ImageGAN(GAN, ModelMixin):
    """A :class:`core.families.GAN` of a DCGAN-style :class:`ConvGenerator` and :class:`ConvCritic`
    on images (B, channels, size, size) in [-1, 1]; saves and loads as a pretrained folder."""

    def __init__(self, channels: int = 1, size: int = 28, latent_dim: int = 64, width: int = 64) -> None:
        super().__init__(
            ConvGenerator(latent_dim, channels, size, width=width), ConvCritic(channels, size, width=width),
            latent_dim,
        )  # fmt: skip


class ImageTripleGAN(TripleGAN, ModelMixin):
    """A :class:`core.families.TripleGAN` on images (B, channels, size, size) in [-1, 1] with
    ``labels`` labelled examples (kept as buffers; :meth:`set_labeled` fills them)."""

    def __init__(
        self, channels: int = 1, size: int = 28, num_classes: int = 10, latent_dim: int = 64, width: int = 64,
        classifier_width: int = 32, labels: int = 100,
    ) -> None:  # fmt: skip
        super().__init__(
            ConvClassifier(num_classes, channels, size, width=classifier_width),
            ConvGenerator(latent_dim, channels, size, width=width, num_classes=num_classes),
            ConvCritic(channels, size, width=width, num_classes=num_classes),
            latent_dim, torch.zeros(labels, channels, size, size), torch.arange(labels) % num_classes,
        )  # fmt: skip

    def set_labeled(self, x: Tensor, y: Tensor) -> None:
        """Copy the labelled set x (labels, C, S, S), y (labels,) into the model's buffers."""
        if x.shape != self.labeled_x.shape or y.shape != self.labeled_y.shape:
            raise ValueError(
                f"labelled set must be {tuple(self.labeled_x.shape)} images and "
                f"{tuple(self.labeled_y.shape)} labels, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        self.labeled_x.copy_(x)
        self.labeled_y.copy_(y)


# --- the registry --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassicFamily:
    """How the pipeline builds, trains, samples and scores one classic family.

    Attributes:
        data: the data transform (``DATA_KINDS``).
        models: the architectures ``--model`` may name (the first is the default).
        build: ``build(config) -> ModelMixin``.
        objective: ``objective(config) -> loss_fn | Game`` for :class:`core.Trainer`.
        draw: ``draw(model, n, labels) -> (n, C, S, S)`` samples in the family's data range.
        score: ``score(model, x_test, config) -> dict`` of likelihood numbers of transformed test
            images (``nll`` nats per image, or ``bpd``), or None for a family without one.
        adversarial: trained as a game: an EMA of the generator, no gradient clipping.
        labelled: trains from a labelled subset of ``config.labels`` images (Triple-GAN).
    """

    data: str
    models: tuple[str, ...]
    build: Callable[[ImageConfig], nn.Module]
    objective: Callable[[ImageConfig], Any]
    draw: Callable[[nn.Module, int, Tensor], Tensor]
    score: Callable[[nn.Module, Tensor, ImageConfig], dict] | None = None
    adversarial: bool = False
    labelled: bool = False


def _shape(c: ImageConfig) -> tuple[int, int, int]:
    return (c.channels, c.image_size, c.image_size)


def _mean_se(v: Tensor) -> tuple[float, float]:
    v = v.double().cpu()
    return float(v.mean()), float(v.std() / math.sqrt(len(v))) if len(v) > 1 else 0.0


@torch.no_grad()
def _batched(fn: Callable[[Tensor], Tensor], x: Tensor, bs: int) -> Tensor:
    return torch.cat([fn(x[i : i + bs]).cpu() for i in range(0, len(x), bs)])


def _vae(c: ImageConfig) -> VAE:
    return VAE(_shape(c), c.latent_dim, c.width, "bernoulli", c.model)


def _vae_score(model: VAE, x: Tensor, c: ImageConfig) -> dict:
    ll = log_likelihood(model, x, k=c.nll_k, chunk=min(c.nll_k, 250), batch_size=c.eval_batch)
    nll, se = _mean_se(-ll)
    return {
        "nll": nll, "nll_se": se, "elbo_nll": -_mean_se(_batched(model.elbo, x, c.eval_batch))[0],
        "likelihood": f"importance-sampled log-likelihood, K = {c.nll_k}",
    }  # fmt: skip


def _exact_score(model: nn.Module, x: Tensor, c: ImageConfig) -> dict:
    nll, se = _mean_se(-_batched(model.log_prob, x, c.eval_batch))
    return {"nll": nll, "nll_se": se, "likelihood": "exact"}


def _flow_score(model: nn.Module, x: Tensor, c: ImageConfig) -> dict:
    bs = max(1, c.eval_batch // 4)
    if isinstance(model, VFlow):
        lp = _batched(lambda v: model.log_prob_bound(v, c.nll_k), x, bs)
        how = f"importance-weighted ELBO, K = {c.nll_k} (an upper bound on bits/dim)"
    else:
        lp = _batched(model.log_prob, x, bs)
        how = "exact" if isinstance(model, RealNVP) else "unbiased Russian-roulette estimate"
    bpd, se = _mean_se(bits_per_dim(lp, x[0].numel()))
    return {"bpd": bpd, "bpd_se": se, "likelihood": how}


def _dequantised_nll(model: nn.Module, batch: Any) -> dict[str, Tensor]:
    """Negative log density per dimension (nats) of the batch's 8-bit levels, freshly dequantised."""
    return flow_nll_loss(model, dequantize(batch[0]))


def _gan_objective(name: str) -> Callable[[ImageConfig], GANGame]:
    def objective(c: ImageConfig) -> GANGame:
        return GANGame(replace(GAN_FAMILIES[name], lr_critic=c.lr, lr_generator=c.lr))

    return objective


def _gan(c: ImageConfig) -> ImageGAN:
    return ImageGAN(c.channels, c.image_size, c.latent_dim, c.width)


def _triple_gan(c: ImageConfig) -> ImageTripleGAN:
    return ImageTripleGAN(
        c.channels, c.image_size, c.num_classes, c.latent_dim, c.width, min(c.width, 32), c.labels
    )


def _triple_objective(c: ImageConfig) -> TripleGANGame:
    return TripleGANGame(
        alpha=0.5, alpha_p=0.1, rp_start=c.steps // 6, labeled_batch=min(64, c.batch_size),
        lr_discriminator=c.lr, lr_classifier=c.lr, lr_generator=c.lr,
    )  # fmt: skip


@torch.no_grad()
def _triple_score(model: ImageTripleGAN, x: Tensor, c: ImageConfig, y: Tensor) -> dict:
    pred = _batched(lambda v: model.classifier(v).argmax(1), x, c.eval_batch)
    return {"test_error": float((pred != y.cpu()).double().mean()), "labels": c.labels}


def _draw(model: nn.Module, n: int, y: Tensor | None) -> Tensor:
    return model.sample(n)


def _draw_mean(model: VAE, n: int, y: Tensor | None) -> Tensor:
    return model.sample(n, mean=True)  # the decoder's Bernoulli means, as the papers show them


def _draw_conditional(model: ImageTripleGAN, n: int, y: Tensor) -> Tensor:
    return model.sample(y)


def _vflow(c: ImageConfig) -> VFlow:
    return VFlow(_shape(c), 1, 2, c.width, c.depth, q_hidden=max(4, c.width // 2))


def _impflow(c: ImageConfig) -> ImpFlow:
    # Each residual network is Lipschitz up to 0.97^3 = 0.91, the rate of the implicit-gradient
    # fixed-point iteration: reaching the 1e-4 tolerance can take log(1e-4) / log(0.91) = 100
    # iterations (60 stopped a quick-preset run at step ~170 with a residual of 1.4e-4).
    return ImpFlow(_shape(c), c.depth, c.width, max_iter=150)


def _binary(
    build: Callable, objective: Callable, draw: Callable, score: Callable, models: tuple[str, ...] = ("mlp",)
) -> ClassicFamily:
    return ClassicFamily("binary", models, build, objective, draw, score)


def _flow(build: Callable) -> ClassicFamily:
    return ClassicFamily("dequantised", ("conv",), build, lambda c: _dequantised_nll, _draw, _flow_score)


def _adversarial(objective: Callable, build: Callable = _gan, **kw: Any) -> ClassicFamily:
    draw = _draw_conditional if kw.get("labelled") else _draw
    return ClassicFamily("signed", ("conv",), build, objective, draw, adversarial=True, **kw)


#: Every classic family of the pipeline (the order of ``--family``'s help).
CLASSIC_FAMILIES: dict[str, ClassicFamily] = {
    "vae": _binary(_vae, lambda c: vae_loss, _draw_mean, _vae_score, ("mlp", "conv")),
    "iwae": _binary(_vae, lambda c: iwae_loss(c.iwae_k), _draw_mean, _vae_score, ("mlp", "conv")),
    "nade": _binary(lambda c: NADE(math.prod(_shape(c)), c.width), lambda c: nll_loss, _draw, _exact_score),
    "realnvp": _flow(lambda c: RealNVP(_shape(c), 2, c.width, c.depth)),
    "vflow": _flow(_vflow),
    "impflow": _flow(_impflow),
    "gan": _adversarial(_gan_objective("gan")),
    "wgan_gp": _adversarial(_gan_objective("wgan_gp")),
    "clc_gan": _adversarial(_gan_objective("clc_gan")),
    "triple_gan": _adversarial(_triple_objective, _triple_gan, labelled=True),
}


# --- data ----------------------------------------------------------------------------------------
def prepare_images(family: str, x: Tensor, split: str, dataset: str) -> Tensor:
    """Images (N, C, H, W) in [-1, 1] of ``split`` as ``family`` trains on them: binarised,
    8-bit levels (dequantised later, per batch; test images are dequantised here with a fixed
    seed) or unchanged. Raises ValueError when the images do not fit the family's data."""
    kind = CLASSIC_FAMILIES[family].data
    if x.min() < -1 or x.max() > 1:
        raise ValueError(
            f"family {family!r} expects {dataset} images in [-1, 1], "
            f"got [{float(x.min()):.3g}, {float(x.max()):.3g}]"
        )
    if kind == "binary":
        return binarize(x, _SPLIT_SEED[split])
    if kind == "dequantised":
        levels = to_uint8(x)
        off = float(((x.double() + 1) * 127.5 - levels.double()).abs().max())
        if off > 1e-3:
            raise ValueError(
                f"family {family!r} models 8-bit images with dequantisation, but the {dataset} images are "
                f"not on the 256-level grid (off by up to {off:.3g} levels; resized?); use the dataset's "
                "native image size"
            )
        if split == "train":
            return levels
        return dequantize(levels, generator=torch.Generator().manual_seed(_SPLIT_SEED[split]))
    return x


def _to_signed(family: str, x: Tensor) -> Tensor:
    """Samples in the family's data range -> [-1, 1] (clamped)."""
    if CLASSIC_FAMILIES[family].data != "signed":
        x = 2 * x - 1
    return x.clamp(-1, 1)


def labelled_subset(y: Tensor, labels: int, num_classes: int, seed: int = 0) -> Tensor:
    """Indices of ``labels`` examples, ``labels / num_classes`` per class, drawn from ``seed``."""
    if labels < num_classes or labels % num_classes:
        raise ValueError(
            f"labels must be a positive multiple of the {num_classes} classes (balanced), got {labels}"
        )
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    per = labels // num_classes
    idx = []
    for k in range(num_classes):
        pick = perm[y[perm] == k][:per]
        if len(pick) < per:
            raise ValueError(f"class {k} has {len(pick)} training images, fewer than the {per} labels asked")
        idx.append(pick)
    return torch.cat(idx)


# --- training, sampling, scoring -----------------------------------------------------------------
def setup_training(
    config: ImageConfig, x: Tensor, y: Tensor, seed: int
) -> tuple[nn.Module, Any, torch.utils.data.TensorDataset]:
    """The fresh model, its Trainer objective (loss_fn or Game) and the training set of a run."""
    spec = CLASSIC_FAMILIES[config.family]
    data = prepare_images(config.family, x, "train", config.dataset)
    model = spec.build(config)
    if spec.labelled:
        idx = labelled_subset(y, config.labels, config.num_classes, seed)
        model.set_labeled(data[idx], y[idx])
    return model, spec.objective(config), torch.utils.data.TensorDataset(data)


def ema_target(model: nn.Module, objective: Any) -> nn.Module:
    """The module the Trainer's EMA averages: the game's EMA player, or the whole model."""
    if isinstance(objective, Game):
        return objective.players(model)[objective.ema_player].module
    return model


def sample_classic(
    model: nn.Module,
    config: ImageConfig,
    n: int,
    *,
    labels: Tensor | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
) -> tuple[Tensor, dict]:
    """n images (n, C, S, S) in [-1, 1] from a classic family's model and ``{"method", "seconds"}``.

    ``labels`` (n,) pick the classes of a class-conditional family (Triple-GAN); the draws are a
    function of ``seed`` (the global RNG is left as it was)."""
    spec = CLASSIC_FAMILIES[config.family]
    if spec.labelled:
        labels = balanced_labels(n, config.num_classes) if labels is None else labels
        check_labels(labels, config.num_classes, n)
    elif labels is not None:
        raise ValueError(f"family {config.family!r} is unconditional; it takes no labels")
    dev = next(model.parameters()).device
    bs = batch_size or config.eval_batch
    out = []
    devices = [dev] if dev.type == "cuda" else []
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for i in tqdm(range(0, n, bs), desc=f"sample {config.family}", disable=not progress, leave=False):
            m = min(bs, n - i)
            y = labels[i : i + m].to(dev) if labels is not None else None
            with torch.no_grad():
                x = spec.draw(model, m, y)
            out.append(_to_signed(config.family, x.reshape(m, *_shape(config)).float()).cpu())
    return torch.cat(out), {"method": DIRECT, "seconds": time.perf_counter() - t0}


def classic_scores(
    model: nn.Module, config: ImageConfig, x_test: Tensor, y_test: Tensor, *, seed: int = 0
) -> dict:
    """The family's own numbers on the first ``config.nll_images`` test images (x in [-1, 1]):
    ``nll`` (nats per image) or ``bpd`` (bits per dimension of the 8-bit data), how they were
    computed, and for Triple-GAN the classifier's ``test_error`` on the whole test split."""
    spec = CLASSIC_FAMILIES[config.family]
    dev = next(model.parameters()).device
    if spec.labelled:
        return _triple_score(model, x_test.to(dev), config, y_test)
    if spec.score is None:
        return {}
    x = prepare_images(config.family, x_test[: config.nll_images], "test", config.dataset).to(dev)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed + 11)
        out = spec.score(model, x, config)
    return {**out, "nll_images": len(x)}
