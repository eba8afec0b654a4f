"""Trainer: exact resume, two-process data parallelism, non-finite losses, EMA, config checks.

Run as a script (``python tests/core/test_trainer.py --ddp-worker OUT BATCH [CRASH_AT]``) it is the
worker of the two-process test.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core.training import EMA, Trainer, TrainerConfig, latest_checkpoint, resolve_device

REPO = Path(__file__).resolve().parents[2]


def _data(n: int = 36) -> TensorDataset:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 3, generator=g)
    return TensorDataset(x, torch.sin(x).sum(1, keepdim=True))


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 16), nn.Dropout(0.2), nn.Tanh(), nn.Linear(16, 1))


def _noisy_loss(model: nn.Module, batch) -> dict[str, torch.Tensor]:
    """MSE with input noise from the global RNG (plus the model's dropout)."""
    x, y = batch
    mse = ((model(x + 0.1 * torch.randn_like(x)) - y) ** 2).mean()
    return {"loss": mse, "abs_err": (mse.detach().sqrt())}


def _config(out_dir: Path, **kw) -> TrainerConfig:
    base = dict(
        steps=12,
        lr=1e-2,
        grad_accum=2,
        warmup_steps=2,
        schedule="cosine",
        grad_clip=1.0,
        ema_decay=0.9,
        ema_warmup=True,
        log_every=2,
        ckpt_every=4,
        out_dir=out_dir,
        seed=3,
        device="cpu",
        progress=False,
        tensorboard=False,
    )
    base.update(kw)
    return TrainerConfig(**base)


def _loader(batch_size: int = 4) -> DataLoader:
    return DataLoader(_data(), batch_size=batch_size, shuffle=True)


def test_resume_after_crash_matches_uninterrupted_run(tmp_path):
    # 36 samples / batch 4 = 9 batches per epoch, 2 per step: steps straddle epoch boundaries.
    ref = Trainer(_model(0), _noisy_loss, _loader(), _config(tmp_path / "ref"))
    ref.fit()

    calls = {"n": 0}

    def crashing_loss(model, batch):
        calls["n"] += 1
        if calls["n"] > 2 * 6 + 1:  # dies inside step 7, after the step-4 checkpoint
            raise RuntimeError("simulated crash")
        return _noisy_loss(model, batch)

    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(_model(0), crashing_loss, _loader(), _config(run)).fit()
    assert latest_checkpoint(run).name == "step_00000004"

    # A fresh process would build a differently initialised model; the checkpoint must win.
    resumed = Trainer(_model(99), _noisy_loss, _loader(), _config(run))
    resumed.fit()
    assert resumed.step == 12

    for (name, a), b in zip(ref.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=f"model {name}")
    for name, a in ref.ema.shadow.items():
        torch.testing.assert_close(resumed.ema.shadow[name], a, rtol=1e-6, atol=1e-7, msg=f"EMA {name}")
    assert resumed.ema.num_updates == ref.ema.num_updates == 12

    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / "ref" / "metrics.csv") as f:
        ref_rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8, 10, 12]
    assert set(rows[0]) >= {"step", "loss", "lr", "samples_per_s", "abs_err", "grad_norm"}
    for r, q in zip(rows, ref_rows, strict=True):
        assert float(r["loss"]) == pytest.approx(float(q["loss"]), rel=1e-6)
        assert float(r["lr"]) == pytest.approx(float(q["lr"]), rel=1e-9)


def test_checkpoints_keep_last_and_resume_explicit_path(tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(_model(0), _noisy_loss, _loader(), _config(out, steps=8, ckpt_every=2, keep_last=2))
    trainer.fit()
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step_00000006", "step_00000008"]  # no temporary folders left behind
    files = {p.name for p in (out / "checkpoints" / "step_00000008").iterdir()}
    assert files == {
        "model.safetensors",
        "ema.safetensors",
        "optimizer.pt",
        "rng_state_0.pt",
        "trainer_state.json",
    }
    assert set(load_file(out / "checkpoints" / "step_00000008" / "ema.safetensors")) == set(
        trainer.ema.shadow
    )

    other = Trainer(_model(5), _noisy_loss, _loader(), _config(tmp_path / "other", steps=8))
    other.fit(resume=out / "checkpoints" / "step_00000008")  # already finished: loads and stops
    assert other.step == 8
    for a, b in zip(trainer.model.parameters(), other.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        other.fit(resume=tmp_path / "nowhere")

    with pytest.warns(UserWarning, match="removing checkpoints newer than step 0"):
        Trainer(_model(0), _noisy_loss, _loader(), _config(out, steps=1, keep_last=2)).fit(resume=False)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000001"]


def test_non_finite_loss_names_the_step(tmp_path):
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        x, y = batch
        loss = ((model(x) - y) ** 2).mean()
        return loss * float("nan") if calls["n"] == 2 * 16 + 1 else loss

    trainer = Trainer(_model(0), loss_fn, _loader(), _config(tmp_path, steps=30, ema_decay=None))
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) at step 17"):
        trainer.fit()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


class _NaNGrad(torch.autograd.Function):
    """Identity forward; the backward pass returns NaN gradients."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


@pytest.mark.parametrize("grad_clip", [1.0, None])
def test_finite_loss_with_nan_gradient_stops_before_the_step(tmp_path, grad_clip):
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        x, y = batch
        out = model(x)
        if calls["n"] == 2 * 4 + 2:  # the second micro-batch of step 5
            out = _NaNGrad.apply(out)
        return ((out - y) ** 2).mean()

    cfg = _config(tmp_path, steps=8, ckpt_every=2, ema_decay=None, grad_clip=grad_clip)
    trainer = Trainer(_model(0), loss_fn, _loader(), cfg)
    with pytest.raises(FloatingPointError, match=r"non-finite gradient .* at step 5 with a finite loss"):
        trainer.fit()
    assert trainer.step == 4
    saved = load_file(tmp_path / "checkpoints" / "step_00000004" / "model.safetensors")
    for name, p in trainer.model.state_dict().items():
        assert torch.isfinite(p).all(), name
        torch.testing.assert_close(p, saved[name])  # not a single update from the NaN gradient
    assert latest_checkpoint(tmp_path).name == "step_00000004"


def test_after_step_hook_runs_once_per_optimizer_step(tmp_path):
    seen = []
    calls = {"loss": 0}

    def loss_fn(model, batch):
        calls["loss"] += 1
        return _noisy_loss(model, batch)

    def hook(model):
        seen.append(model[0].weight.detach().clone())

    trainer = Trainer(_model(0), loss_fn, _loader(), _config(tmp_path, steps=6), after_step=hook)
    trainer.fit()
    assert calls["loss"] == 12 and len(seen) == 6  # grad_accum = 2 micro-batches per step
    torch.testing.assert_close(seen[-1], trainer.model[0].weight)  # it sees the updated weights


def test_consistency_target_follows_each_optimizer_step_under_accumulation(tmp_path):
    from core import Denoiser, VPSchedule
    from core.objectives.consistency import ConsistencyDistillation, ConsistencyModel

    def net():
        return _MLPDenoiserNet()

    sch = VPSchedule.linear()
    cd = ConsistencyDistillation(
        ConsistencyModel(Denoiser(net(), sch, "x0")), Denoiser(net(), sch), num_steps=6, ema_decay=0.5
    )
    targets = []

    def hook(model):
        model.update_target()
        targets.append([p.detach().clone() for p in model.student.parameters()])

    data = TensorDataset(torch.randn(32, 2))
    loader = DataLoader(data, batch_size=4, shuffle=True)
    cfg = _config(tmp_path, steps=3, grad_accum=4, ema_decay=None, warmup_steps=0)
    before = [p.detach().clone() for p in cd.target.parameters()]
    Trainer(cd, lambda m, b: m(b[0]), loader, cfg, after_step=hook).fit()
    # theta- <- mu theta- + (1 - mu) theta after each of the 3 steps, never per micro-batch.
    expected = before
    for student in targets:
        expected = [0.5 * t + 0.5 * s for t, s in zip(expected, student, strict=True)]
    for got, want in zip(cd.target.parameters(), expected, strict=True):
        torch.testing.assert_close(got, want)


class _MLPDenoiserNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0]).reshape(-1, 1)
        return self.lin(torch.cat([x, t], 1))


@pytest.mark.parametrize("bad", ["model.safetensors", "optimizer.pt", "trainer_state.json"])
def test_corrupt_newest_checkpoint_resumes_from_an_older_one(tmp_path, bad):
    ref = Trainer(_model(0), _noisy_loss, _loader(), _config(tmp_path / "ref", steps=8))
    ref.fit()
    run = tmp_path / "run"
    Trainer(_model(0), _noisy_loss, _loader(), _config(run, steps=8)).fit()
    newest = run / "checkpoints" / "step_00000008"
    (newest / bad).write_bytes(b"\x00garbage" * 7)

    fresh = Trainer(_model(5), _noisy_loss, _loader(), _config(run, steps=8))
    with pytest.raises(ValueError, match=f"step_00000008.*{bad}"):
        fresh.load_checkpoint(newest)  # an explicit load names the bad file
    resumed = Trainer(_model(5), _noisy_loss, _loader(), _config(run, steps=8))
    with pytest.warns(UserWarning, match=f"skipping unreadable checkpoint .*step_00000008.*{bad}"):
        resumed.fit()
    assert resumed.step == 8
    for a, b in zip(ref.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)

    for ckpt in (run / "checkpoints").iterdir():
        (ckpt / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="no readable checkpoint"), pytest.warns(UserWarning):
        Trainer(_model(5), _noisy_loss, _loader(), _config(run, steps=8)).fit()


def test_loss_fn_output_is_validated(tmp_path):
    vector = Trainer(_model(0), lambda m, b: m(b[0]), _loader(), _config(tmp_path / "a"))
    with pytest.raises(ValueError, match="scalar loss"):
        vector.fit()
    no_key = Trainer(_model(0), lambda m, b: {"mse": m(b[0]).mean()}, _loader(), _config(tmp_path / "b"))
    with pytest.raises(ValueError, match="'loss'"):
        no_key.fit()


def test_config_is_validated():
    with pytest.raises(ValueError, match="schedule"):
        TrainerConfig(schedule="linear")
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainerConfig(mixed_precision="fp8")
    with pytest.raises(ValueError, match="grad_accum"):
        TrainerConfig(grad_accum=0)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainerConfig(ema_decay=1.0)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="bogus"):
        resolve_device("bogus")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


def test_ema_update_warmup_and_swap():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.9, warmup=True)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], torch.full((1, 2), 0.1 * 1.0 + 0.9 * 3.0))
    ema.warmup = False
    ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], torch.full((1, 2), 0.9 * 2.8 + 0.1 * 3.0))

    with ema.average_parameters(model):
        torch.testing.assert_close(model.weight, ema.shadow["weight"])
    torch.testing.assert_close(model.weight, torch.full((1, 2), 3.0))

    other = EMA(model, decay=0.9)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 2
    torch.testing.assert_close(other.shadow["weight"], ema.shadow["weight"])
    other.copy_to(model)
    torch.testing.assert_close(model.weight, ema.shadow["weight"])
    with pytest.raises(ValueError, match="missing"):
        EMA(nn.Linear(2, 1)).load_state_dict(ema.state_dict())


# ----------------------------------------------------------------------------------------- DDP
def _ddp_job(out_dir: Path, batch_size: int, crash_at: int = 0) -> None:
    """Deterministic job: global batch = batch_size * num_processes * grad_accum (= 16 here).

    ``crash_at > 0``: raise inside that step's loss (after the step-4 checkpoint); the next
    launch resumes from that checkpoint.
    """
    torch.set_num_threads(1)
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
    calls = {"n": 0}

    def loss_fn(m, batch):
        calls["n"] += 1
        if crash_at and calls["n"] > 2 * (crash_at - 1):
            raise RuntimeError("simulated crash")
        x, y = batch
        return ((m(x) - y) ** 2).mean()

    loader = DataLoader(_data(32), batch_size=batch_size, shuffle=True)
    cfg = _config(out_dir, steps=6, ckpt_every=4, log_every=1, ema_warmup=False)
    Trainer(model, loss_fn, loader, cfg).fit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_run_crashes_resumes_and_matches_single_process(tmp_path):
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "MASTER_", "WORLD_", "RANK"))
    }
    port = _free_port()
    env.update(
        HF_HOME=str(tmp_path / "hf"),  # no accelerate config file is read
        OMP_NUM_THREADS="1",
        MASTER_PORT=str(port),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    # `accelerate launch --cpu` only spawns several processes through mpirun; torchrun is the portable way.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(port)]
    cmd += [__file__, "--ddp-worker", str(tmp_path / "ddp"), "4"]
    crashed = subprocess.run(cmd + ["5"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert crashed.returncode != 0 and "simulated crash" in crashed.stdout + crashed.stderr
    assert latest_checkpoint(tmp_path / "ddp").name == "step_00000004"
    # Both processes load the checkpoint (on CPU each is device "cpu:<rank>") and finish the run.
    port = _free_port()
    env["MASTER_PORT"] = str(port)
    cmd[cmd.index("--master_port") + 1] = str(port)
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    _ddp_job(tmp_path / "single", batch_size=8)

    for name in ("model.safetensors", "ema.safetensors"):
        ddp = load_file(tmp_path / "ddp" / "checkpoints" / "step_00000006" / name)
        single = load_file(tmp_path / "single" / "checkpoints" / "step_00000006" / name)
        assert ddp.keys() == single.keys()
        for k in ddp:
            torch.testing.assert_close(ddp[k], single[k], rtol=1e-5, atol=1e-6, msg=f"{name} {k}")
    ddp_ckpt = tmp_path / "ddp" / "checkpoints" / "step_00000006"
    assert {p.name for p in ddp_ckpt.glob("rng_state_*.pt")} == {"rng_state_0.pt", "rng_state_1.pt"}
    with open(tmp_path / "ddp" / "metrics.csv") as f, open(tmp_path / "single" / "metrics.csv") as g:
        for r, q in zip(csv.DictReader(f), csv.DictReader(g), strict=True):
            assert float(r["loss"]) == pytest.approx(float(q["loss"]), rel=1e-5)


if __name__ == "__main__" and sys.argv[1:2] == ["--ddp-worker"]:
    _ddp_job(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0)
