"""Likelihood families on Fashion-MNIST: claims 1 and 2 of the classic-families benchmark, and
their rows of the one-table comparison (claim 6).

- Claim 1, **statically binarised Fashion-MNIST** (``core.data.load_binarized_fashion_mnist``,
  seed 0): a VAE, IWAEs trained with K = 5 and K = 50 (same encoder/decoder) and NADE. All three
  latent-variable models are scored by the same importance-sampled estimator
  (``core.families.log_likelihood``, K = ``eval_k``: 5,000 in ``paper``) on the same test images;
  NADE's NLL is exact. The claim: the IWAE-50 model's NLL is below the VAE's, and on every model
  the bound L_K rises with K (1 < 5 < 50 < eval_k).
- Claim 2, **uniformly dequantised 8-bit Fashion-MNIST** (28x28): bits/dim of RealNVP (exact),
  VFlow (importance-weighted ELBO, K = ``vflow_eval_k``: an upper bound on its bits/dim), ImpFlow
  and a residual flow with the same number of parameters (unbiased Russian-roulette estimates).
  Parameter counts are matched to RealNVP's by choosing each model's hidden width. The claim:
  VFlow <= RealNVP; ImpFlow vs the residual flow is reported, whichever way it falls.

Every model trains through ``core.Trainer`` (resumable checkpoints in ``<out>/<model>/train``),
is saved with ``save_pretrained`` in ``<out>/<model>/model`` and its evaluation is cached in
``<out>/<model>/result.json``; a rerun skips finished work.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core.config import apply_overrides, config_to_dict, preset, save_config
from core.data import atomic_write, load_binarized_fashion_mnist, load_fashion_mnist, to_uint8
from core.families import (
    NADE,
    VAE,
    ImpFlow,
    RealNVP,
    ResidualFlow,
    VFlow,
    bits_per_dim,
    count_parameters,
    dequantize,
    iwae_loss,
    log_likelihood,
    nll_loss,
    vae_loss,
)
from core.plotting import save_image_grid
from core.training import Trainer, TrainerConfig, resolve_device

__all__ = ["LATENT_MODELS", "FLOW_MODELS", "LikelihoodPreset", "PRESETS", "run"]

LATENT_MODELS = ("vae", "iwae5", "iwae50")
FLOW_MODELS = ("realnvp", "vflow", "resflow", "impflow")
MODELS = (*LATENT_MODELS, "nade", *FLOW_MODELS)
#: Families of the one-table comparison (claim 6); the residual flows are in claim 2 only.
TABLE_MODELS = (*LATENT_MODELS, "nade", "realnvp", "vflow")
DIMS = 784


@dataclass
class LikelihoodPreset:
    """Sizes and budgets of the likelihood stage.

    ``steps`` per model (optimizer steps of ``batch_size``, ``flow_batch`` for flows);
    ``test_images`` test images score every model; ``eval_k`` importance samples per image for
    the VAE/IWAE estimate; ``fid_samples`` samples per claim-6 model for fid_fmnist.
    """

    steps: dict[str, int] = field(default_factory=dict)
    batch_size: int = 100
    flow_batch: int = 32
    lr: float = 1e-3
    flow_lr: float = 1e-3
    train_images: int | None = None
    test_images: int = 500
    latent_dim: int = 32
    vae_hidden: int = 200
    nade_hidden: int = 500
    flow_hidden: int = 24
    flow_scales: int = 2
    flow_couplings: int = 3
    imp_blocks: int = 2
    eval_k: int = 1000
    eval_chunk: int = 250
    vflow_eval_k: int = 16
    fid_samples: int = 500
    grid_samples: int = 64
    ckpt_every: int = 500

    def __post_init__(self) -> None:
        unknown = sorted(set(self.steps) - set(MODELS))
        if unknown:
            raise ValueError(f"unknown model(s) {unknown} in steps; expected a subset of {MODELS}")


PRESETS = {
    "smoke": LikelihoodPreset(
        steps=dict.fromkeys(MODELS, 3), batch_size=16, flow_batch=4, train_images=256, test_images=8,
        latent_dim=4, vae_hidden=16, nade_hidden=8, flow_hidden=4, flow_couplings=1, imp_blocks=1,
        eval_k=20, eval_chunk=10, vflow_eval_k=2, fid_samples=20, grid_samples=4, ckpt_every=2,
    ),
    "quick": LikelihoodPreset(
        steps={"vae": 1000, "iwae5": 1000, "iwae50": 1000, "nade": 500, "realnvp": 5000, "vflow": 5000,
               "resflow": 250, "impflow": 250},
        nade_hidden=200, vflow_eval_k=128,
    ),
    "paper": LikelihoodPreset(
        steps={"vae": 300_000, "iwae5": 300_000, "iwae50": 300_000, "nade": 200_000, "realnvp": 100_000,
               "vflow": 100_000, "resflow": 100_000, "impflow": 100_000},
        batch_size=100, flow_batch=64, test_images=10_000, latent_dim=50, vae_hidden=200,
        nade_hidden=500, flow_hidden=64, flow_couplings=3, imp_blocks=4, eval_k=5000, eval_chunk=500,
        vflow_eval_k=128, fid_samples=10_000, grid_samples=100, ckpt_every=5000,
    ),
}  # fmt: skip


# --- data ------------------------------------------------------------------------------------
def _binary_data(config: LikelihoodPreset) -> tuple[torch.Tensor, torch.Tensor]:
    x, _ = load_binarized_fashion_mnist("train", seed=0)
    xt, _ = load_binarized_fashion_mnist("test", seed=0)
    return x[: config.train_images], xt[: config.test_images]


def _level_data(config: LikelihoodPreset) -> tuple[torch.Tensor, torch.Tensor]:
    x, _ = load_fashion_mnist(split="train")
    xt, _ = load_fashion_mnist(split="test")
    return to_uint8(x[: config.train_images]), to_uint8(xt[: config.test_images])


def _dequantised_loss(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
    """Negative log density per dimension (nats) of freshly dequantised 8-bit images."""
    x = dequantize(batch[0])
    return {"loss": -model.log_prob(x).mean() / DIMS}


# --- models ----------------------------------------------------------------------------------
def _match_hidden(build: Callable[[int], nn.Module], target: int, at_most: bool = False) -> int:
    """The hidden width whose model's parameter count is closest to ``target`` (or, with
    ``at_most``, the largest not above it); the count grows with the width (bisection)."""
    lo, hi = 1, 1024
    while lo < hi:  # smallest width with at least ``target`` parameters
        mid = (lo + hi) // 2
        if count_parameters(build(mid)) >= target:
            hi = mid
        else:
            lo = mid + 1
    if lo == 1:
        return 1
    above, below = count_parameters(build(lo)), count_parameters(build(lo - 1))
    if at_most and above > target:
        return lo - 1
    return lo if above - target <= target - below else lo - 1


def build_models(config: LikelihoodPreset) -> dict[str, tuple[nn.Module, Callable]]:
    """Every model of the stage with its Trainer loss; the flows' widths match RealNVP's size."""
    shape = (1, 28, 28)

    def vae() -> VAE:
        return VAE(shape, config.latent_dim, config.vae_hidden, "bernoulli", "mlp")

    realnvp = RealNVP(shape, config.flow_scales, config.flow_hidden, config.flow_couplings)
    target = count_parameters(realnvp)

    def vflow(h: int) -> VFlow:
        return VFlow(shape, 1, config.flow_scales, h, config.flow_couplings, q_hidden=8)

    def resflow(h: int) -> ResidualFlow:
        return ResidualFlow(shape, 2 * config.imp_blocks, h)

    def impflow(h: int) -> ImpFlow:
        return ImpFlow(shape, config.imp_blocks, h)

    return {
        "vae": (vae(), vae_loss),
        "iwae5": (vae(), iwae_loss(5)),
        "iwae50": (vae(), iwae_loss(50)),
        "nade": (NADE(DIMS, config.nade_hidden), nll_loss),
        "realnvp": (realnvp, _dequantised_loss),
        "vflow": (vflow(_match_hidden(vflow, target, at_most=True)), _dequantised_loss),
        "resflow": (resflow(_match_hidden(resflow, target)), _dequantised_loss),
        "impflow": (impflow(_match_hidden(impflow, target)), _dequantised_loss),
    }


def _train(
    name: str, model: nn.Module, loss_fn: Callable, data: torch.Tensor, config: LikelihoodPreset,
    folder: Path, device: torch.device, seed: int,
) -> dict:  # fmt: skip
    flow = name in FLOW_MODELS
    loader = DataLoader(
        TensorDataset(data), batch_size=config.flow_batch if flow else config.batch_size, shuffle=True,
        drop_last=True,
    )  # fmt: skip
    steps = config.steps.get(name, 1)
    tcfg = TrainerConfig(
        steps=steps, lr=config.flow_lr if flow else config.lr, schedule="cosine",
        warmup_steps=min(50, steps - 1), ckpt_every=min(config.ckpt_every, steps), keep_last=1,
        out_dir=str(folder / "train"), seed=seed, device=device.type, log_every=min(50, steps),
        tensorboard=False, progress=True,
    )  # fmt: skip
    info_path = folder / "train_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {"train_seconds": 0.0}
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    last = Trainer(model, loss_fn, loader, tcfg).fit(resume=True)
    info["train_seconds"] += time.perf_counter() - t0
    info.update(steps=steps, final_loss=last.get("loss", info.get("final_loss")))
    model.save_pretrained(folder / "model")
    with atomic_write(info_path) as tmp:
        tmp.write_text(json.dumps(info, indent=2))
    return info


# --- evaluation ------------------------------------------------------------------------------
def _mean_se(v: torch.Tensor) -> tuple[float, float]:
    v = v.double()
    return float(v.mean()), float(v.std() / math.sqrt(len(v))) if len(v) > 1 else 0.0


@torch.no_grad()
def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, bs: int) -> torch.Tensor:
    return torch.cat([fn(x[i : i + bs]).cpu() for i in range(0, len(x), bs)])


def _sample(model: nn.Module, name: str, n: int, bs: int = 100) -> tuple[torch.Tensor, float]:
    """n images (n, 1, 28, 28) in [0, 1] and seconds per image. Latent models show their decoder's
    Bernoulli means; NADE shows binary draws; flows show their samples."""
    t0 = time.perf_counter()
    parts = []
    for i in range(0, n, bs):
        m = min(bs, n - i)
        s = model.sample(m) if name not in LATENT_MODELS else model.sample(m, mean=True)
        parts.append(s.reshape(m, 1, 28, 28).float().cpu())
    return torch.cat(parts), (time.perf_counter() - t0) / n


def _evaluate(
    name: str, model: nn.Module, test: torch.Tensor, config: LikelihoodPreset, folder: Path, seed: int
) -> dict:
    from vision.generation.quality import sample_metrics

    model.eval()
    dev = next(model.parameters()).device
    test = test.to(dev)
    torch.manual_seed(seed + 11)
    out: dict[str, Any] = {"params": count_parameters(model), "test_images": len(test)}
    if name in LATENT_MODELS:
        ll = log_likelihood(model, test, k=config.eval_k, chunk=config.eval_chunk)
        out["nll"], out["nll_se"] = _mean_se(-ll)
        out["eval_k"] = config.eval_k
        out["bounds"] = {
            str(k): -_mean_se(_batched(lambda x, k=k: model.iwae_bound(x, k), test, 100))[0]
            for k in (1, 5, 50)
        }
        out["bounds"][str(config.eval_k)] = out["nll"]
        out["elbo_nll"] = -_mean_se(_batched(model.elbo, test, 100))[0]
    elif name == "nade":
        out["nll"], out["nll_se"] = _mean_se(-_batched(model.log_prob, test, 100))
    else:
        g = torch.Generator().manual_seed(seed + 5)
        y = dequantize(test.cpu(), generator=g).to(dev)
        if name == "vflow":
            lp = _batched(lambda x: model.log_prob_bound(x, config.vflow_eval_k), y, 50)
            out["bound_k"] = config.vflow_eval_k
        else:
            lp = _batched(model.log_prob, y, 50)
        out["bpd"], out["bpd_se"] = _mean_se(bits_per_dim(lp, DIMS))
    n = config.fid_samples if name in TABLE_MODELS else config.grid_samples
    torch.manual_seed(seed + 13)
    samples, per_image = _sample(model, name, n)
    out["sample_seconds_per_image"] = per_image
    grid = folder / "samples.png"
    save_image_grid(samples[: config.grid_samples], grid, value_range=(0.0, 1.0), scale=2)
    out["grid"] = str(grid)
    if name in TABLE_MODELS:
        out.update(sample_metrics("fashion_mnist", samples * 2 - 1))
    return out


def _reference(config: LikelihoodPreset, folder: Path) -> dict:
    """fid_fmnist of real test images, grey and statically binarised: the floors of the table."""
    path = folder / "reference.json"
    if path.is_file():
        return json.loads(path.read_text())
    from vision.generation.quality import sample_metrics

    n = config.fid_samples
    grey, _ = load_fashion_mnist(split="test")
    binary, _ = load_binarized_fashion_mnist("test", seed=0)
    idx = torch.randperm(len(grey), generator=torch.Generator().manual_seed(1))[:n]
    ref = {
        "real test images (grey)": sample_metrics("fashion_mnist", grey[idx]),
        "real test images (binarised)": sample_metrics("fashion_mnist", binary[idx] * 2 - 1),
    }
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(ref, indent=2))
    return ref


# --- claims ----------------------------------------------------------------------------------
def claims(results: dict[str, dict]) -> dict:
    """Claims 1 and 2 from the per-model results (booleans with their numbers)."""
    out = {}
    if all(m in results for m in (*LATENT_MODELS, "nade")):
        nll = {m: results[m]["nll"] for m in (*LATENT_MODELS, "nade")}
        monotone = {}
        for m in LATENT_MODELS:
            b = [v for _, v in sorted(results[m]["bounds"].items(), key=lambda kv: int(kv[0]))]
            monotone[m] = all(x > y for x, y in zip(b, b[1:], strict=False))  # NLL bounds fall with K
        out["1"] = {
            "holds": nll["iwae50"] < nll["vae"] and all(monotone.values()),
            "data": "statically binarised Fashion-MNIST (seed 0)",
            "nll_nats": nll,
            "nll_se": {m: results[m]["nll_se"] for m in nll},
            "estimator_k": results["vae"]["eval_k"],
            "nll_bound_by_k": {m: results[m]["bounds"] for m in LATENT_MODELS},
            "bound_monotone_in_k": monotone,
        }
    if all(m in results for m in FLOW_MODELS):
        bpd = {m: results[m]["bpd"] for m in FLOW_MODELS}
        out["2"] = {
            "holds": bpd["vflow"] <= bpd["realnvp"],
            "data": "uniformly dequantised 8-bit Fashion-MNIST 28x28",
            "bpd": bpd,
            "bpd_se": {m: results[m]["bpd_se"] for m in FLOW_MODELS},
            "params": {m: results[m]["params"] for m in FLOW_MODELS},
            "vflow_bound_k": results["vflow"]["bound_k"],
            "impflow_below_resflow": bpd["impflow"] < bpd["resflow"],
        }
    return out


def _model_key(config: LikelihoodPreset, name: str, seed: int) -> dict:
    """The settings one model's cached result depends on (its own step count, not the others')."""
    key = config_to_dict(config)
    key["steps"] = config.steps.get(name, 1)
    return {**key, "seed": seed}


def run(preset_name: str, out: Path, device: str = "auto", *, seed: int = 0, **overrides: Any) -> dict:
    """Train and evaluate every model of the stage (cached per model under ``out``); returns
    ``{"claims", "metrics", "table_rows"}``. ``overrides`` replace preset fields."""
    config = apply_overrides(preset(PRESETS, preset_name), overrides)
    out = Path(out)
    save_config(config, out / "config.json")
    dev = resolve_device(device)
    torch.manual_seed(seed)  # initial weights from the seed, whatever ran before in this process
    models = build_models(config)
    data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    results: dict[str, dict] = {}
    for name, (model, loss_fn) in models.items():
        folder = out / name
        path = folder / "result.json"
        key = _model_key(config, name, seed)
        if path.is_file():
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                results[name] = cached
                continue
            shutil.rmtree(folder)  # trained under other settings: start this model afresh
        kind = "levels" if name in FLOW_MODELS else "binary"
        if kind not in data:
            data[kind] = _level_data(config) if kind == "levels" else _binary_data(config)
        train, test = data[kind]
        info = _train(name, model, loss_fn, train, config, folder, dev, seed)
        res = {**_evaluate(name, model, test, config, folder, seed), "train": info, "key": key}
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(res, indent=2))
        results[name] = res
        print(
            f"[likelihood] {name}: "
            + ", ".join(f"{k}={v:.4g}" for k, v in res.items() if isinstance(v, float))
        )
    ref = _reference(config, out)
    metrics: dict[str, float] = {}
    for m in (*LATENT_MODELS, "nade"):
        metrics[f"nll_{m}"] = results[m]["nll"]
    for m in FLOW_MODELS:
        metrics[f"bpd_{m}"] = results[m]["bpd"]
    rows = []
    for name, label in (("real test images (grey)", "data"), ("real test images (binarised)", "data")):
        rows.append({"family": label, "model": name, **_row_metrics(ref[name])})
    for m in TABLE_MODELS + ("resflow", "impflow"):
        r = results[m]
        row = {"family": _FAMILY[m], "model": m, "params": r["params"], **_row_metrics(r)}
        row["train_seconds"] = r["train"]["train_seconds"]
        if "nll" in r:
            row["nll_nats"] = r["nll"]
        if "bpd" in r:
            row["bpd"] = r["bpd"]
        rows.append(row)
    return {"claims": claims(results), "metrics": metrics, "table_rows": rows, "models": results}


_FAMILY = {
    "vae": "VAE (binarised)", "iwae5": "IWAE K=5 (binarised)", "iwae50": "IWAE K=50 (binarised)",
    "nade": "NADE (binarised)", "realnvp": "RealNVP", "vflow": "VFlow", "resflow": "residual flow",
    "impflow": "ImpFlow",
}  # fmt: skip


def _row_metrics(r: dict) -> dict:
    keys = ("fid_fmnist", "precision", "recall", "sample_seconds_per_image", "grid")
    return {k: r[k] for k in keys if k in r}
