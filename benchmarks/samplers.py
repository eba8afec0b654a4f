"""Sampler benchmark: convergence orders on the exact oracle, parity with diffusers, the default
sampler against diffusers' default, per-step solver overhead, and Analytic-DPM.

    python benchmarks/samplers.py [--out runs/benchmarks/samplers.json] [--seed 0] [--quick]

Prints a table per section and writes JSON plus a log-log PNG (error vs NFE) beside it.
One torch thread; about 3-5 minutes on one CPU core (``--quick``: fewer trajectories).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from benchmarks.analytic_dpm import analytic_dpm_nll, analytic_dpm_sample_error  # noqa: E402
from core import Denoiser, VESchedule, VPSchedule  # noqa: E402
from core.oracle import GaussianMixture  # noqa: E402
from core.sampling import get_method, sample  # noqa: E402
from core.schedules import linear_betas  # noqa: E402

N_TRAIN = 1000
CONVERGENCE = {
    "DDIM": dict(method="ddim"),
    "DPM-Solver++(2M)": dict(method="dpm_solver++", order=2, multistep=True),
    "DPM-Solver-3 singlestep": dict(method="dpm_solver", order=3, multistep=False),
    "DPM-Solver-3M (default)": dict(method="dpm_solver", order=3, multistep=True),
    "DPM-Solver++(3M) shipped": dict(method="dpm_solver++", order=3, multistep=True),
    "DPM-Solver++(3M) corrected": dict(method="dpm_solver++", order=3, multistep=True, corrected=True),
    "DPM-Solver++(2S)": dict(method="dpm_solver++", order=2, multistep=False),
    "Heun": dict(method="heun"),
}
ORDER_NFE = (50, 100, 200)
LOW_NFE = (10, 20)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _median_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref).norm(dim=1).median())


def _steps_for(cfg: dict, nfe: int) -> tuple[int, int]:
    """The largest step count whose NFE is <= nfe, and that NFE."""
    m = get_method(cfg["method"])
    order = cfg.get("order", m.default_order)
    multistep = cfg.get("multistep", m.default_multistep)
    steps = max(s for s in range(1, nfe + 1) if m.nfe(s, order, multistep) <= nfe)
    return steps, m.nfe(steps, order, multistep)


# --- 1. convergence orders ---------------------------------------------------------------
def convergence(n: int, seed: int) -> dict:
    out = {}
    for dim in (2, 64):
        gm = GaussianMixture.random(dim, k=8, seed=seed, schedule=VPSchedule.linear())
        den = gm.as_denoiser("eps")
        x_T = torch.randn(n, dim, dtype=torch.float64, generator=_gen(seed + 1))
        ref = gm.reference_solution(x_T)
        rows = {}
        for name, cfg in CONVERGENCE.items():
            pts = []
            for target in LOW_NFE + ORDER_NFE:
                steps, nfe = _steps_for(cfg, target)
                pts.append((nfe, _median_err(sample(den, x_T, grid="logsnr", steps=steps, **cfg), ref)))
            hi = [(math.log(f), math.log(e)) for f, e in pts if f >= ORDER_NFE[0] - 2]
            mx, my = sum(p[0] for p in hi) / len(hi), sum(p[1] for p in hi) / len(hi)
            slope = sum((a - mx) * (b - my) for a, b in hi) / sum((a - mx) ** 2 for a, _ in hi)
            rows[name] = {"nfe": [p[0] for p in pts], "error": [p[1] for p in pts], "order": -slope}
        out[f"{dim}d"] = rows
    return out


# --- 2. parity with diffusers --------------------------------------------------------------
class FixedRandomNet(torch.nn.Module):
    """A small fixed random eps-network of (x, float timestep in 0..N_TRAIN): the same on both
    sides of a parity check, so only the solvers differ."""

    def __init__(self, dim: int = 4, width: int = 32) -> None:
        super().__init__()
        g = _gen(0)
        self.register_buffer("w1", torch.randn(dim + 2, width, generator=g) / dim**0.5)
        self.register_buffer("w2", torch.randn(width, dim, generator=g) / width**0.5)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])[:, None] / N_TRAIN
        h = torch.cat([x, torch.sin(3 * tt), torch.cos(3 * tt)], 1) @ self.w1.to(x.dtype)
        return torch.tanh(h) @ self.w2.to(x.dtype) + 0.5 * x


def _same_schedule(scheduler) -> VPSchedule:
    ac = scheduler.alphas_cumprod.to(torch.float64)
    return VPSchedule.discrete(1 - ac / torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]]))


def _grid_of(timesteps: torch.Tensor) -> torch.Tensor:
    """diffusers' timesteps (and the final step to timestep 0) as our times t = (n + 1) / N."""
    ts = (timesteps.to(torch.float64) + 1) / N_TRAIN
    return torch.cat([ts, torch.tensor([1.0 / N_TRAIN], dtype=torch.float64)])


@torch.no_grad()
def _run_diffusers(scheduler, net, x: torch.Tensor) -> torch.Tensor:
    for t in scheduler.timesteps:
        x = scheduler.step(net(x, t.to(x.dtype)), t, x).prev_sample
    return x


def parity(seed: int) -> dict:
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    net = FixedRandomNet()
    out = {}
    for dtype in (torch.float64, torch.float32):
        x_T = torch.randn(64, 4, generator=_gen(seed), dtype=dtype)
        for steps in (10, 20):
            sch = DPMSolverMultistepScheduler(
                num_train_timesteps=N_TRAIN,
                algorithm_type="dpmsolver++",
                solver_order=2,
                final_sigmas_type="sigma_min",
            )
            sch.set_timesteps(steps)
            den = Denoiser(net, _same_schedule(sch))
            ref = _run_diffusers(sch, net, x_T.clone())
            ours = sample(
                den, x_T, method="dpm_solver++", order=2, multistep=True, grid=_grid_of(sch.timesteps)
            )
            out[f"dpm_solver++_2M_{steps}_{str(dtype)[6:]}"] = float((ours - ref).norm() / ref.norm())
            sch = DDIMScheduler(
                num_train_timesteps=N_TRAIN,
                clip_sample=False,
                set_alpha_to_one=False,
                timestep_spacing="trailing",
            )
            sch.set_timesteps(steps)
            ref = _run_diffusers(sch, net, x_T.clone())
            ours = sample(
                Denoiser(net, _same_schedule(sch)), x_T, method="ddim", grid=_grid_of(sch.timesteps)
            )
            out[f"ddim_{steps}_{str(dtype)[6:]}"] = float((ours - ref).norm() / ref.norm())
    return out


# --- 3. the default against diffusers' default -------------------------------------------
def default_vs_diffusers(n: int, seed: int) -> dict:
    from diffusers import DPMSolverMultistepScheduler

    sch = VPSchedule.discrete(linear_betas(N_TRAIN))
    out = {}
    for dim in (2, 64):
        gm = GaussianMixture.random(dim, k=8, seed=seed, schedule=sch)
        den = gm.as_denoiser("eps")
        x_T = torch.randn(n, dim, dtype=torch.float64, generator=_gen(seed + 1))
        ref = gm.reference_solution(x_T)  # to t_min, where core.sample stops
        # diffusers' default ends at sigma = 0: the same ODE in (x / alpha, sigma / alpha), which
        # does not depend on the schedule, solved on a VE schedule down to sigma = 1e-6.
        ve = GaussianMixture(gm.weights, gm.means, gm.covs, schedule=VESchedule(1e-6, 1e3))
        t_ve = float(ve.schedule.t_of_log_snr(sch.log_snr(sch.t_max)))
        ref0 = ve.reference_solution(x_T / sch.alpha(sch.t_max), t_start=t_ve, t_end=0.0)
        rows = {}
        for nfe in LOW_NFE:
            theirs = DPMSolverMultistepScheduler(num_train_timesteps=N_TRAIN)
            theirs.set_timesteps(nfe)
            xd = _run_diffusers(theirs, den.net, x_T.clone())
            ours = _median_err(sample(den, x_T, steps=nfe), ref)
            err_d, err_d_tmin = _median_err(xd, ref0), _median_err(xd, ref)
            rows[nfe] = {
                "core_default": ours,
                "diffusers_default": err_d,
                "diffusers_default_vs_t_min": err_d_tmin,
                "ratio": ours / err_d,
                "ratio_same_endpoint": ours / err_d_tmin,
            }
        out[f"{dim}d"] = rows
    return out


# --- 4. per-step overhead ------------------------------------------------------------------
def overhead(reps: int = 30) -> dict:
    """Marginal cost of one more step, (T(220 steps) - T(20 steps)) / 200, for both libraries.

    Ours: whole ``core.sample`` calls with a network that returns a fixed tensor, minus that
    call's own cost; diffusers: ``set_timesteps`` plus the ``step`` loop. Both include their
    per-step share of set-up (grid, coefficients, caches), so the ratio compares like with like.
    Interleaved, minimum over repetitions (the machine may be shared).
    """
    from diffusers import DPMSolverMultistepScheduler

    out_t = torch.randn(64, 2)

    class Null(torch.nn.Module):
        def forward(self, x, t):
            return out_t

    net = Null()
    den = Denoiser(net, VPSchedule.discrete(linear_betas(N_TRAIN)))
    x_T = torch.randn(64, 2)
    short, long = 20, 220
    configs = {
        "dpm_solver_3M (default)": dict(),
        "dpm_solver++_2M": dict(method="dpm_solver++", order=2),
        "ddim": dict(method="ddim"),
    }
    best: dict[str, float] = {}

    def keep(key: str, value: float) -> None:
        best[key] = min(best.get(key, math.inf), value)

    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=N_TRAIN, algorithm_type="dpmsolver++", solver_order=2
    )
    tm = torch.zeros(64)
    for _ in range(reps):
        for steps in (short, long):
            for name, cfg in configs.items():
                t0 = time.perf_counter()
                sample(den, x_T, steps=steps, **cfg)
                keep(f"{name}/{steps}", time.perf_counter() - t0)
            x = x_T
            t0 = time.perf_counter()
            scheduler.set_timesteps(steps)
            t1 = time.perf_counter()
            for t in scheduler.timesteps:
                x = scheduler.step(out_t, t, x).prev_sample
            t2 = time.perf_counter()
            keep(f"diffusers/{steps}", t2 - t0)
            keep(f"diffusers_set_timesteps/{steps}", t1 - t0)
            keep("diffusers_step", (t2 - t1) / steps)
        t0 = time.perf_counter()
        for _ in range(200):
            net(x_T, tm)
        keep("network_call", (time.perf_counter() - t0) / 200)
    theirs = (best[f"diffusers/{long}"] - best[f"diffusers/{short}"]) / (long - short)
    res = {
        "diffusers_per_step_us": theirs * 1e6,
        "diffusers_step_call_us": best["diffusers_step"] * 1e6,
        "diffusers_call_at_20_steps_us": best[f"diffusers/{short}"] * 1e6,
        "null_network_call_us": best["network_call"] * 1e6,
    }
    for name in configs:
        per_step = (best[f"{name}/{long}"] - best[f"{name}/{short}"]) / (long - short) - best["network_call"]
        at_20 = best[f"{name}/{short}"] - short * best["network_call"]
        res[name] = {
            "per_step_us": per_step * 1e6,
            "ratio": per_step / theirs,
            "ratio_to_step_call": per_step / best["diffusers_step"],
            "call_at_20_steps_us": at_20 * 1e6,
            "ratio_call_at_20_steps": at_20 / best[f"diffusers/{short}"],
        }
    return res


# --- 5. Analytic-DPM -----------------------------------------------------------------------
def analytic(seed: int, quick: bool) -> dict:
    nll = analytic_dpm_nll(
        steps=(10, 25, 50), seed=seed, **({"n_data": 2000, "n_gamma": 500} if quick else {})
    )
    sw = analytic_dpm_sample_error(steps=10, seed=seed, **({"n": 5000, "n_gamma": 2000} if quick else {}))
    return {"nll_bits_per_dim": nll, "sliced_wasserstein_10_steps": sw}


def _since(t0: float) -> str:
    return f"{time.perf_counter() - t0:.0f}s"


# --- report --------------------------------------------------------------------------------
def _plot(conv: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(conv), figsize=(6 * len(conv), 4.5))
    for ax, (key, rows) in zip(axes, conv.items(), strict=True):
        for name, r in rows.items():
            ax.loglog(r["nfe"], r["error"], "o-", label=f"{name} ({r['order']:.2f})", ms=3)
        ax.set(xlabel="NFE", ylabel="median error vs reference ODE", title=f"{key} mixture, logSNR grid")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", default="runs/benchmarks/samplers.json", help="JSON path (PNG written beside it)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="64 trajectories, smaller Analytic-DPM sets")
    args = ap.parse_args()
    n = 64 if args.quick else 256
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    res: dict = {"config": {"trajectories": n, "seed": args.seed, "torch": torch.__version__, "threads": 1}}
    t_all = time.perf_counter()

    t0 = time.perf_counter()
    res["convergence"] = convergence(n, args.seed)
    print(f"\n== Convergence (median error, {n} trajectories, logSNR grid, VP linear) [{_since(t0)}]")
    for key, rows in res["convergence"].items():
        print(f"{key:>4} {'method':28s} order  " + " ".join(f"NFE~{f:<5d}" for f in LOW_NFE + ORDER_NFE))
        for name, r in rows.items():
            print(f"{'':4} {name:28s} {r['order']:5.2f}  " + " ".join(f"{e:9.2e}" for e in r["error"]))

    t0 = time.perf_counter()
    res["parity"] = parity(args.seed)
    print(
        f"\n== Parity with diffusers (relative error, same model and grid) [{time.perf_counter() - t0:.0f}s]"
    )
    for k, v in res["parity"].items():
        print(f"  {k:28s} {v:.2e}")

    t0 = time.perf_counter()
    res["default_vs_diffusers_default"] = default_vs_diffusers(n, args.seed)
    print(f"\n== core.sample default vs diffusers' default DPMSolverMultistepScheduler [{_since(t0)}]")
    print("  (discrete 1000-step linear-beta model; diffusers' default ends at sigma = 0, ours at t_min)")
    for key, rows in res["default_vs_diffusers_default"].items():
        for nfe, r in rows.items():
            print(
                f"  {key:>4} NFE {nfe:3d}: core {r['core_default']:.3e}"
                f"  diffusers {r['diffusers_default']:.3e}"
                f"  ratio {r['ratio']:.3f}  (same end point: {r['ratio_same_endpoint']:.3f})"
            )

    t0 = time.perf_counter()
    res["overhead"] = overhead()
    o = res["overhead"]
    print(f"\n== Per-step solver overhead, (64, 2) float32 batch, CPU, 1 thread [{_since(t0)}]")
    print(
        f"  diffusers DPMSolverMultistepScheduler: {o['diffusers_per_step_us']:.1f} us per extra step"
        f" ({o['diffusers_step_call_us']:.1f} us per .step call)"
    )
    for name in ("dpm_solver_3M (default)", "dpm_solver++_2M", "ddim"):
        r = o[name]
        print(
            f"  {name:26s} {r['per_step_us']:6.1f} us/step  ratio {r['ratio']:.3f}"
            f" (to .step alone {r['ratio_to_step_call']:.3f});"
            f" whole 20-step call {r['call_at_20_steps_us']:.0f} us, ratio {r['ratio_call_at_20_steps']:.3f}"
        )

    t0 = time.perf_counter()
    res["analytic_dpm"] = analytic(args.seed, args.quick)
    a = res["analytic_dpm"]
    print(f"\n== Analytic-DPM (default mixture, time-uniform trajectories) [{time.perf_counter() - t0:.0f}s]")
    for row in a["nll_bits_per_dim"]:
        print(
            f"  NLL bound {row['steps']:3d} steps: analytic {row['analytic']:.4f}  beta {row['beta']:.4f}"
            f"  beta~ {row['beta_tilde']:.4f} bits/dim"
        )
    print(
        "  sliced W2 at 10 steps: "
        + "  ".join(f"{k} {v:.4f}" for k, v in a["sliced_wasserstein_10_steps"].items())
    )

    res["config"]["seconds"] = time.perf_counter() - t_all
    out_path.write_text(json.dumps(res, indent=2))
    png = out_path.with_suffix(".png")
    _plot(res["convergence"], png)
    print(f"\nwrote {out_path} and {png} ({res['config']['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
