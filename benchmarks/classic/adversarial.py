"""Adversarial stage of the classic-families benchmark: Dirac-GAN, CLC-GAN vs WGAN, Triple-GAN.

``run(preset, out, device)`` measures

- ``dirac_gan``: the equilibrium eigenvalues of Dirac-GAN/WGAN (zero real part) and with CLC
  (negative real part), the iterates' distance to the equilibrium, and the phase plot;
- ``clc_beats_wgan``: CLC-GAN against its base WGAN (the same recipe without the control term: the
  WGAN loss with neither clipping nor penalty), trained for the same number of iterations, on a
  ring of 8 Gaussians (modes covered, share of high-quality samples) and on Fashion-MNIST
  (``fid_fmnist``), with convergence plots; WGAN-GP is measured beside them (``*_wgan_gp``);
- ``triple_gan_beats_supervised``: Triple-GAN's classifier trained with 100 labels plus unlabelled
  Fashion-MNIST against the same classifier trained on the 100 labels alone; each run's number of
  steps is chosen by the error on a labelled validation split (never the test set);

and returns ``{"claims", "metrics", "table_rows"}`` with one table row per GAN family trained on
Fashion-MNIST (``gan``, ``wgan_gp``, ``clc_gan``). ``fid_fmnist`` is the Frechet distance in
the features of the classifier trained here on Fashion-MNIST, **not** an Inception FID. Every
training run lives in ``out/<stage>/<run>`` and resumes; a finished stage is cached in
``out/<stage>/result.json`` (recomputed when the preset changes).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from core.data import load_fashion_mnist
from core.families import (
    GAN,
    GAN_FAMILIES,
    ConvClassifier,
    ConvCritic,
    ConvGenerator,
    GANGame,
    MLPCritic,
    MLPGenerator,
    TripleGAN,
    TripleGANGame,
    dirac_gan_eigenvalues,
    dirac_gan_iterates,
    dirac_phase_plot,
)
from core.files import atomic_write
from core.plotting import save_image_grid
from core.training import Trainer, TrainerConfig, resolve_device
from vision.generation.quality import sample_metrics

__all__ = ["PRESETS", "AdversarialPreset", "build", "run"]

FMNIST_FAMILIES = ("gan", "wgan_gp", "clc_gan")
#: Each family's name in the classic-families table.
TABLE_NAMES = {"gan": "GAN", "wgan_gp": "WGAN-GP", "clc_gan": "CLC-GAN"}
#: CLC-GAN's base WGAN: the CLC-GAN recipe without the control term (no clipping, no penalty).
CLC_BASE = "clc_base"


@dataclass(frozen=True)
class AdversarialPreset:
    """Sizes of every run of the stage (``steps`` count optimizer steps of all players).

    ``clc`` is the control weight of CLC-GAN on Dirac-GAN and the ring, ``fmnist_clc`` on images:
    the control pins the critic's outputs near +-1/weight, and at 1.0 the image critic saturates
    (fid_fmnist 48 against its base's 43 after 2,400 steps; 40 at 0.1).
    """

    ring_steps: int = 3000
    ring_eval_every: int = 300
    ring_hidden: int = 64
    ring_batch: int = 256
    ring_lr: float = 1e-3
    clc: float = 1.0
    fmnist_clc: float = 0.1
    fmnist_steps: int = 2400
    fmnist_chunks: int = 4
    fmnist_width: int = 16
    fmnist_latent: int = 32
    fmnist_batch: int = 64
    fmnist_train: int = 20000
    fmnist_samples: int = 1000
    gan_lr: float = 2e-4
    wgan_lr: float = 2e-4
    triple_labels: int = 100
    triple_val: int = 1000
    triple_unlabeled: int = 20000
    triple_steps: int = 3000
    triple_chunks: int = 6
    supervised_steps: int = 600
    supervised_eval_every: int = 50
    classifier_width: int = 16
    triple_width: int = 16
    seed: int = 0


PRESETS: dict[str, AdversarialPreset] = {
    "smoke": AdversarialPreset(
        ring_steps=24,
        ring_eval_every=12,
        ring_hidden=16,
        ring_batch=64,
        fmnist_steps=12,
        fmnist_chunks=2,
        fmnist_width=4,
        fmnist_latent=8,
        fmnist_batch=16,
        fmnist_train=256,
        fmnist_samples=64,
        triple_labels=20,
        triple_val=40,
        triple_unlabeled=128,
        triple_steps=12,
        triple_chunks=2,
        supervised_steps=8,
        supervised_eval_every=4,
        classifier_width=4,
        triple_width=4,
    ),  # fmt: skip
    "quick": AdversarialPreset(),
    "paper": AdversarialPreset(
        ring_steps=60000,
        ring_eval_every=3000,
        ring_hidden=512,
        ring_batch=512,
        fmnist_steps=60000,
        fmnist_chunks=10,
        fmnist_width=64,
        fmnist_latent=128,
        fmnist_batch=64,
        fmnist_train=60000,
        fmnist_samples=10000,
        triple_unlabeled=58900,
        triple_steps=60000,
        triple_chunks=20,
        supervised_steps=5000,
        supervised_eval_every=250,
        classifier_width=32,
        triple_width=64,
    ),  # fmt: skip
}


# --- helpers -------------------------------------------------------------------------------------
@functools.cache
def _fashion_mnist(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return load_fashion_mnist(split=split)


def _write_json(path: Path, obj: Any) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def _cached(path: Path, key: dict, fn) -> dict:
    """``fn()``'s result, cached in ``path`` under ``key`` (recomputed when the key changes)."""
    key = json.loads(json.dumps(key))  # as it reads back (tuples become lists)
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return saved["result"]
    result = fn()
    _write_json(path, {"key": key, "result": result})
    return result


def _trainer_config(out: Path, steps: int, device: str, seed: int, **kw) -> TrainerConfig:
    base = dict(
        steps=steps, lr=2e-4, grad_clip=None, ckpt_every=max(1, steps // 2), keep_last=1,
        log_every=max(1, min(100, steps)), out_dir=out, seed=seed, device=device, progress=False,
        tensorboard=False,
    )  # fmt: skip
    base.update(kw)
    return TrainerConfig(**base)


def _device_kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else device


def _gan_config(family: str, p: AdversarialPreset, ring: bool) -> Any:
    """The family's recipe at this preset's learning rate and control weight."""
    lr = p.ring_lr if ring else (p.gan_lr if family.startswith("gan") else p.wgan_lr)
    if family == CLC_BASE:
        return replace(_gan_config("clc_gan", p, ring), clc=0.0)
    cfg = replace(GAN_FAMILIES[family], lr_critic=lr, lr_generator=lr)
    return replace(cfg, clc=p.clc if ring else p.fmnist_clc) if family == "clc_gan" else cfg


# --- Dirac-GAN -----------------------------------------------------------------------------------
def _dirac(out: Path, p: AdversarialPreset) -> dict:
    eig = dirac_phase_plot(out / "dirac_phase.png", clc=p.clc)
    dist = {}
    for name, loss, c in (("gan", "gan", 0.0), ("wgan", "wgan", 0.0), ("clc_gan", "gan", p.clc)):
        it = dirac_gan_iterates((1.0, 1.0), loss, c, lr=0.1, steps=400)
        dist[name] = float(it[-1].norm())
    ev = {k: dirac_gan_eigenvalues(*v) for k, v in {"gan": ("gan", 0.0), "wgan": ("wgan", 0.0)}.items()}
    ev["clc_gan"] = dirac_gan_eigenvalues("gan", p.clc)
    ev["clc_wgan"] = dirac_gan_eigenvalues("wgan", p.clc)
    claim = (
        all(abs(float(ev[k].real.abs().max())) < 1e-9 for k in ("gan", "wgan"))
        and all(bool((ev[k].real < 0).all()) for k in ("clc_gan", "clc_wgan"))
        and dist["clc_gan"] < 1e-3
        and dist["gan"] > 1.0
    )
    return {
        "claim": claim,
        "eigenvalues": {k: [[v.real, v.imag] for v in vals] for k, vals in eig.items()},
        "final_distance_to_equilibrium": dist,
    }


# --- ring of 8 Gaussians ---------------------------------------------------------------------------
RING_RADIUS, RING_STD = 2.0, 0.05


def ring_data(n: int, generator: torch.Generator) -> torch.Tensor:
    """n points (n, 2) of the mixture of 8 Gaussians (std 0.05) on the circle of radius 2."""
    k = torch.randint(0, 8, (n,), generator=generator)
    angle = k.double() * (2 * math.pi / 8)
    centres = RING_RADIUS * torch.stack([angle.cos(), angle.sin()], 1)
    return (centres + RING_STD * torch.randn(n, 2, generator=generator, dtype=torch.float64)).float()


def ring_coverage(x: torch.Tensor, min_share: float = 0.01) -> tuple[int, float]:
    """(modes covered, share of high-quality samples) of samples x (N, 2): a sample is high quality
    within 3 std of its nearest mode; a mode is covered by at least ``min_share`` of the samples."""
    angle = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    centres = RING_RADIUS * torch.stack([angle.cos(), angle.sin()], 1)
    d = torch.cdist(x.double().cpu(), centres)
    near, idx = d.min(1)
    good = near < 3 * RING_STD
    counts = torch.bincount(idx[good], minlength=8)
    return int((counts >= min_share * len(x)).sum()), float(good.double().mean())


def _ring(out: Path, p: AdversarialPreset, device: str) -> dict:
    g = torch.Generator().manual_seed(p.seed)
    data = ring_data(20000, g)
    curves: dict[str, list] = {}
    for family in (CLC_BASE, "wgan_gp", "clc_gan"):
        torch.manual_seed(p.seed)
        model = GAN(
            MLPGenerator(2, 2, hidden=p.ring_hidden, depth=3), MLPCritic(2, hidden=p.ring_hidden, depth=3), 2
        )
        game = GANGame(_gan_config(family, p, ring=True))
        curve = []
        for end in range(p.ring_eval_every, p.ring_steps + 1, p.ring_eval_every):
            loader = DataLoader(TensorDataset(data), batch_size=p.ring_batch, shuffle=True, drop_last=True)
            cfg = _trainer_config(
                out / family, end, _device_kind(device), p.seed, ckpt_every=p.ring_eval_every
            )
            trainer = Trainer(model, game, loader, cfg)
            trainer.fit()
            x = model.sample(2000, generator=torch.Generator(device=trainer.device).manual_seed(1))
            modes, hq = ring_coverage(x)
            curve.append({"step": end, "modes": modes, "high_quality": hq})
        curves[family] = curve
        _scatter(out / f"ring_{family}.png", x.cpu(), data[:2000], family)
    _plot_curves(out / "ring_convergence.png", curves, "modes", "modes covered (of 8)", "ring of 8 Gaussians")
    last = {k: (v[-1]["modes"], v[-1]["high_quality"]) for k, v in curves.items()}
    return {
        "curves": curves,
        **{f"modes_{k}": v[0] for k, v in last.items()},
        **{f"high_quality_{k}": v[1] for k, v in last.items()},
        "clc_better": last["clc_gan"] > last[CLC_BASE],
    }


# --- Fashion-MNIST GANs ----------------------------------------------------------------------------
def _fmnist_model(p: AdversarialPreset) -> GAN:
    return GAN(
        ConvGenerator(p.fmnist_latent, 1, 28, width=p.fmnist_width), ConvCritic(1, 28, width=p.fmnist_width),
        p.fmnist_latent,
    )  # fmt: skip


def _fmnist(out: Path, p: AdversarialPreset, device: str) -> dict:
    x, _ = _fashion_mnist("train")
    x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(p.seed))[: p.fmnist_train]]
    results: dict[str, Any] = {}
    for family in (*FMNIST_FAMILIES, CLC_BASE):
        torch.manual_seed(p.seed)
        model = _fmnist_model(p)
        game = GANGame(_gan_config(family, p, ring=False))
        curve, seconds = [], 0.0
        chunk = max(1, p.fmnist_steps // p.fmnist_chunks)
        ends = list(range(chunk, p.fmnist_steps, chunk))[: p.fmnist_chunks - 1] + [p.fmnist_steps]
        for end in ends:
            cfg = _trainer_config(out / family, end, _device_kind(device), p.seed, ckpt_every=chunk)
            cfg.ema_decay = 0.999
            loader = DataLoader(TensorDataset(x), batch_size=p.fmnist_batch, shuffle=True, drop_last=True)
            trainer = Trainer(model, game, loader, cfg)
            t0 = time.perf_counter()
            trainer.fit()
            seconds += time.perf_counter() - t0
            gen = copy.deepcopy(model)
            trainer.ema.copy_to(gen.generator)
            t0 = time.perf_counter()
            samples = gen.sample(
                p.fmnist_samples, generator=torch.Generator(device=trainer.device).manual_seed(1)
            )
            per_image = (time.perf_counter() - t0) / p.fmnist_samples
            m = sample_metrics("fashion_mnist", samples.cpu())
            curve.append({"step": end, "fid_fmnist": m["fid_fmnist"]})
        save_image_grid(samples[:64].cpu(), out / f"samples_{family}.png", nrow=8, scale=2)
        results[family] = {
            "fid_fmnist": m["fid_fmnist"], "precision": m["precision"], "recall": m["recall"],
            "seconds_per_image": per_image, "curve": curve, "steps": p.fmnist_steps,
        }  # fmt: skip
    curves = {k: v["curve"] for k, v in results.items() if k in (CLC_BASE, "wgan_gp", "clc_gan")}
    _plot_curves(out / "fmnist_convergence.png", curves, "fid_fmnist", "fid_fmnist (lower is better)",
                 "Fashion-MNIST, same iterations")  # fmt: skip
    return results


# --- Triple-GAN ------------------------------------------------------------------------------------
def _split(p: AdversarialPreset) -> dict[str, torch.Tensor]:
    """Balanced labelled set, a labelled validation split and an unlabelled pool, disjoint, from the
    training split; the test split is only for the final numbers."""
    x, y = _fashion_mnist("train")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(p.seed + 1))
    per_class = p.triple_labels // 10
    labeled = torch.cat([perm[y[perm] == k][:per_class] for k in range(10)])
    rest = perm[~torch.isin(perm, labeled)]
    val, pool = rest[: p.triple_val], rest[p.triple_val : p.triple_val + p.triple_unlabeled]
    xt, yt = _fashion_mnist("test")
    return {"xl": x[labeled], "yl": y[labeled], "xv": x[val], "yv": y[val], "xu": x[pool], "xt": xt, "yt": yt}


@torch.no_grad()
def _error(classifier: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    was = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    pred = torch.cat([classifier(x[i : i + 1000].to(device)).argmax(1).cpu() for i in range(0, len(x), 1000)])
    classifier.train(was)
    return float((pred != y).double().mean())


def _supervised(d: dict, p: AdversarialPreset, device: str) -> dict:
    torch.manual_seed(p.seed)
    dev = resolve_device(device)
    clf = ConvClassifier(10, 1, 28, width=p.classifier_width).to(dev)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(p.seed)
    best = (math.inf, 0, copy.deepcopy(clf.state_dict()))
    for step in range(1, p.supervised_steps + 1):
        idx = torch.randint(0, len(d["yl"]), (64,), generator=g)
        xb, yb = d["xl"][idx].to(dev), d["yl"][idx].to(dev)
        loss = F.cross_entropy(clf(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % p.supervised_eval_every == 0:
            err = _error(clf, d["xv"], d["yv"])
            if err < best[0]:
                best = (err, step, copy.deepcopy(clf.state_dict()))
    clf.load_state_dict(best[2])
    return {"val_error": best[0], "chosen_steps": best[1], "test_error": _error(clf, d["xt"], d["yt"])}


def _triple_model(d: dict, p: AdversarialPreset) -> TripleGAN:
    w = p.triple_width
    return TripleGAN(
        ConvClassifier(10, 1, 28, width=p.classifier_width),
        ConvGenerator(p.fmnist_latent, 1, 28, width=w, num_classes=10),
        ConvCritic(1, 28, width=w, num_classes=10),
        p.fmnist_latent, d["xl"], d["yl"],
    )  # fmt: skip


def _triple(out: Path, p: AdversarialPreset, device: str) -> dict:
    d = _split(p)
    supervised = _supervised(d, p, device)
    torch.manual_seed(p.seed)
    model = _triple_model(d, p)
    game = TripleGANGame(alpha=0.5, alpha_p=0.1, rp_start=p.triple_steps // 6, labeled_batch=64)
    chunk = max(1, p.triple_steps // p.triple_chunks)
    best = (math.inf, 0, None)
    curve = []
    for end in range(chunk, p.triple_steps + 1, chunk):
        loader = DataLoader(TensorDataset(d["xu"]), batch_size=p.fmnist_batch, shuffle=True, drop_last=True)
        cfg = _trainer_config(out / "triple_gan", end, _device_kind(device), p.seed, ckpt_every=chunk)
        Trainer(model, game, loader, cfg).fit()
        err = _error(model.classifier, d["xv"], d["yv"])
        curve.append({"step": end, "val_error": err})
        if err < best[0]:
            best = (err, end, copy.deepcopy(model.classifier.state_dict()))
    model.classifier.load_state_dict(best[2])
    y = torch.arange(10).repeat_interleave(8).to(next(model.parameters()).device)
    save_image_grid(model.sample(y, generator=torch.Generator(device=y.device).manual_seed(0)).cpu(),
                    out / "samples_triple_gan.png", nrow=8, scale=2)  # fmt: skip
    return {
        "labels": int(len(d["yl"])),
        "supervised": supervised,
        "triple_gan": {
            "val_error": best[0],
            "chosen_steps": best[1],
            "test_error": _error(model.classifier, d["xt"], d["yt"]),
            "curve": curve,
        },  # fmt: skip
    }


# --- figures -------------------------------------------------------------------------------------
def _plot_curves(path: Path, curves: dict[str, list], key: str, ylabel: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, curve in curves.items():
        ax.plot([c["step"] for c in curve], [c[key] for c in curve], marker="o", label=name)
    ax.set(xlabel="optimizer steps (critic + generator)", ylabel=ylabel, title=title)
    ax.legend()
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _scatter(path: Path, x: torch.Tensor, data: torch.Tensor, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(data[:, 0], data[:, 1], s=2, c="0.7", label="data")
    ax.scatter(x[:, 0], x[:, 1], s=2, c="C1", label="samples")
    ax.set(xlim=(-3, 3), ylim=(-3, 3), title=title, aspect="equal")
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


# --- entry -------------------------------------------------------------------------------------------
def build(preset: str, device: str = "cpu") -> dict[str, tuple[torch.nn.Module, Any]]:
    """The preset's models and games by run name (for checks that a preset builds and trains)."""
    p = _preset(preset)
    out: dict[str, tuple[torch.nn.Module, Any]] = {}
    for family in FMNIST_FAMILIES:
        out[family] = (_fmnist_model(p), GANGame(_gan_config(family, p, ring=False)))
    fake = {"xl": torch.zeros(p.triple_labels, 1, 28, 28), "yl": torch.arange(p.triple_labels) % 10}
    out["triple_gan"] = (_triple_model(fake, p), TripleGANGame(rp_start=p.triple_steps // 6))
    return out


_STAGE_FIELDS = {
    "dirac": ("clc",),
    "ring": ("ring_", "clc", "seed"),
    "fmnist": ("fmnist_", "gan_lr", "wgan_lr", "clc", "seed"),
    "triple": ("triple_", "supervised_", "classifier_width", "fmnist_latent", "fmnist_batch", "seed"),
}


def _key(p: AdversarialPreset, stage: str) -> dict:
    """The preset fields a stage depends on (its cache key), with the GAN recipes it trains."""
    fields = {k: v for k, v in asdict(p).items() if k.startswith(_STAGE_FIELDS[stage])}
    if stage in ("ring", "fmnist"):
        fields["recipes"] = {
            f: asdict(_gan_config(f, p, stage == "ring")) for f in (CLC_BASE, *FMNIST_FAMILIES)
        }
    return fields


def _preset(preset: str) -> AdversarialPreset:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[preset]


def run(preset: str, out: Path, device: str = "cpu") -> dict:
    """Run (or resume) the adversarial stage; figures and caches go to ``out``. See the module docstring."""
    p = _preset(preset)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    dirac = _cached(out / "dirac" / "result.json", _key(p, "dirac"), lambda: _dirac(out / "dirac", p))
    ring = _cached(out / "ring" / "result.json", _key(p, "ring"), lambda: _ring(out / "ring", p, device))
    fmnist = _cached(
        out / "fmnist" / "result.json", _key(p, "fmnist"), lambda: _fmnist(out / "fmnist", p, device)
    )
    triple = _cached(
        out / "triple" / "result.json", _key(p, "triple"), lambda: _triple(out / "triple", p, device)
    )

    fid_better = fmnist["clc_gan"]["fid_fmnist"] < fmnist[CLC_BASE]["fid_fmnist"]
    claims = {
        "3": {"holds": bool(dirac["claim"]), "eigenvalues": dirac["eigenvalues"]},
        "4": {
            "holds": bool(ring["clc_better"] and fid_better),
            "ring_modes": {k[len("modes_") :]: v for k, v in ring.items() if k.startswith("modes_")},
            "fid_fmnist": {k: v["fid_fmnist"] for k, v in fmnist.items()},
        },
        "5": {
            "holds": triple["triple_gan"]["test_error"] < triple["supervised"]["test_error"],
            "labels": triple["labels"],
            "test_error": {k: triple[k]["test_error"] for k in ("triple_gan", "supervised")},
        },
    }
    metrics = {
        "dirac_eigenvalues": dirac["eigenvalues"],
        "dirac_final_distance": dirac["final_distance_to_equilibrium"],
        **{f"ring_{k}": v for k, v in ring.items() if k.startswith(("modes_", "high_quality_"))},
        **{f"fid_fmnist_{k}": v["fid_fmnist"] for k, v in fmnist.items()},
        "triple_gan_labels": triple["labels"],
        "triple_gan_test_error": triple["triple_gan"]["test_error"],
        "supervised_test_error": triple["supervised"]["test_error"],
        "triple_gan_val_error": triple["triple_gan"]["val_error"],
        "supervised_val_error": triple["supervised"]["val_error"],
        "seconds": time.perf_counter() - t0,
    }
    rows = [
        {
            "family": TABLE_NAMES[family],
            "model": family,
            "fid_fmnist": fmnist[family]["fid_fmnist"],
            "precision": fmnist[family]["precision"],
            "recall": fmnist[family]["recall"],
            "sample_seconds_per_image": fmnist[family]["seconds_per_image"],
            "grid": str(out / "fmnist" / f"samples_{family}.png"),
        }
        for family in FMNIST_FAMILIES
    ]
    result = {"claims": claims, "metrics": metrics, "table_rows": rows}
    _write_json(out / "result.json", result)
    return result
