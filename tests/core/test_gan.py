"""GAN family and the several-player Trainer: losses against closed forms, Dirac-GAN eigenvalues,
exact resume mid-cycle, weight clipping, a GAN that learns, and bad input."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core.families import (
    GAN,
    GANConfig,
    GANGame,
    MLPClassifier,
    MLPCritic,
    MLPGenerator,
    TripleGAN,
    TripleGANGame,
    all_class_scores,
    clc_penalty,
    critic_loss,
    dirac_gan_eigenvalues,
    dirac_gan_iterates,
    dirac_gan_jacobian,
    generator_loss,
    gradient_penalty,
)
from core.training import Game, Player, Trainer, TrainerConfig, latest_checkpoint


def _gan(seed: int, dim: int = 2) -> GAN:
    torch.manual_seed(seed)
    return GAN(MLPGenerator(4, dim, hidden=16), MLPCritic(dim, hidden=16), latent_dim=4)


def _loader(n: int = 40, dim: int = 2) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    return DataLoader(TensorDataset(torch.randn(n, dim, generator=g) + 2.0), batch_size=8, shuffle=True)


def _cfg(out, **kw) -> TrainerConfig:
    base = dict(
        steps=14, lr=1e-3, ckpt_every=5, log_every=3, out_dir=out, seed=2, device="cpu", progress=False,
        tensorboard=False, ema_decay=0.9, ema_warmup=True, grad_clip=None, warmup_steps=2, schedule="cosine",
    )  # fmt: skip
    base.update(kw)
    return TrainerConfig(**base)


# --- Dirac-GAN ---------------------------------------------------------------------------------
def test_dirac_gan_eigenvalues_match_closed_form_and_clc_converges():
    for loss, fp in (("gan", 0.5), ("wgan", 1.0)):  # f'(0) of -log(1 + e^-t) and of t
        ev = dirac_gan_eigenvalues(loss)
        assert ev.real.abs().max() < 1e-12, (loss, ev)
        torch.testing.assert_close(ev.imag.abs(), torch.full((2,), fp, dtype=torch.float64))
        lam = 0.7
        torch.testing.assert_close(
            dirac_gan_jacobian(loss, lam), torch.tensor([[0.0, -fp], [fp, -lam]], dtype=torch.float64)
        )
        clc = dirac_gan_eigenvalues(loss, lam)
        assert (clc.real < 0).all(), (loss, clc)
        torch.testing.assert_close(clc.sum().real, torch.tensor(-lam, dtype=torch.float64))  # trace
        torch.testing.assert_close(clc.prod().real, torch.tensor(fp * fp, dtype=torch.float64))  # det

        start = torch.tensor([1.0, 1.0], dtype=torch.float64)
        free = dirac_gan_iterates((1.0, 1.0), loss, 0.0, lr=0.1, steps=250)
        damped = dirac_gan_iterates((1.0, 1.0), loss, lam, lr=0.1, steps=250)
        assert free[-1].norm() >= 0.95 * start.norm()  # circles (and slowly spirals out)
        assert damped[-1].norm() < 1e-3 * start.norm()
    with pytest.raises(ValueError, match="unknown Dirac-GAN loss"):
        dirac_gan_eigenvalues("hinge")


# --- losses ------------------------------------------------------------------------------------
def test_losses_match_their_definitions():
    d_real, d_fake = torch.randn(64), torch.randn(64)
    bce = F.binary_cross_entropy_with_logits
    ref_d = bce(d_real, torch.ones(64)) + bce(d_fake, torch.zeros(64))
    for kind in ("minimax", "nonsaturating"):
        torch.testing.assert_close(critic_loss(d_real, d_fake, kind), ref_d)
    torch.testing.assert_close(
        generator_loss(d_fake, "minimax"), torch.log1p(-torch.sigmoid(d_fake)).mean(), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(generator_loss(d_fake, "nonsaturating"), bce(d_fake, torch.ones(64)))
    torch.testing.assert_close(critic_loss(d_real, d_fake, "wgan"), d_fake.mean() - d_real.mean())
    torch.testing.assert_close(generator_loss(d_fake, "wgan"), -d_fake.mean())
    torch.testing.assert_close(clc_penalty(d_real, d_fake, 2.0), (d_real**2).mean() + (d_fake**2).mean())
    assert critic_loss(torch.zeros(3), torch.zeros(3), "nonsaturating").item() == pytest.approx(
        2 * math.log(2)
    )

    critic = nn.Linear(3, 1, bias=True)  # gradient w everywhere: penalty (|w| - 1)^2 exactly
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[2.0, 1.0, 2.0]]))  # |w| = 3
    gp = gradient_penalty(lambda x: critic(x).squeeze(1), torch.randn(5, 3), torch.randn(5, 3))
    assert gp.item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="unknown GAN loss"):
        critic_loss(d_real, d_fake, "hinge")


# --- the Trainer plays the game ----------------------------------------------------------------
_GAME = GANConfig(loss="wgan", n_critic=3, gp=1.0, clc=0.5, clip=0.5, lr_critic=2e-3, lr_generator=1e-3)


def test_gan_resume_mid_cycle_matches_uninterrupted_run(tmp_path):
    ref = Trainer(_gan(0), GANGame(_GAME), _loader(), _cfg(tmp_path / "ref"))
    ref.fit()

    class Crashing(GANGame):
        calls = 0

        def loss(self, player, model, batch):
            Crashing.calls += 1
            if Crashing.calls > 7:  # dies in step 8, after the step-5 checkpoint (mid-cycle)
                raise RuntimeError("simulated crash")
            return super().loss(player, model, batch)

    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(_gan(0), Crashing(_GAME), _loader(), _cfg(run)).fit()
    ckpt = latest_checkpoint(run)
    assert ckpt.name == "step_00000005"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["cycle"] == ["critic"] * 3 + ["generator"] and state["cycle_position"] == 1

    resumed = Trainer(_gan(42), GANGame(_GAME), _loader(), _cfg(run))
    resumed.fit()
    for (name, a), b in zip(ref.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)
    assert set(resumed.ema.shadow) == {n for n, _ in resumed.model.generator.named_parameters()}
    for name, a in ref.ema.shadow.items():
        torch.testing.assert_close(resumed.ema.shadow[name], a, rtol=0, atol=0, msg=f"EMA {name}")
    # 14 steps of the cycle (c c c g): 11 critic steps and 3 generator steps, each with its own LR schedule.
    assert resumed.ema.num_updates == 3
    for name, n in (("critic", 11), ("generator", 3)):
        opt_state = resumed.optimizers[name].state_dict()["state"]
        assert all(int(s["step"]) == n for s in opt_state.values()), name
        assert resumed.schedulers[name].last_epoch == n
        ref_lr = ref.optimizers[name].param_groups[0]["lr"]
        assert resumed.optimizers[name].param_groups[0]["lr"] == ref_lr
    # Weight clipping ran after every critic step.
    assert all(p.abs().max() <= 0.5 for p in resumed.model.critic.parameters())
    rows = (run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"loss/critic", "loss/generator", "lr/critic", "lr/generator", "gp/critic"} <= set(header)


def test_nonsaturating_gan_learns_a_gaussian(tmp_path):
    torch.manual_seed(0)
    data = torch.randn(2048, 1) * 0.5 + 2.0
    loader = DataLoader(TensorDataset(data), batch_size=128, shuffle=True)
    model = GAN(MLPGenerator(2, 1, hidden=32), MLPCritic(1, hidden=32), latent_dim=2)
    game = GANGame(GANConfig(loss="nonsaturating", lr_critic=2e-3, lr_generator=2e-3))
    cfg = _cfg(tmp_path, steps=400, ckpt_every=None, log_every=100, ema_decay=None, warmup_steps=0)
    cfg.schedule = "constant"
    Trainer(model, game, loader, cfg).fit()
    x = model.sample(4000, generator=torch.Generator().manual_seed(0))
    assert abs(x.mean().item() - 2.0) < 0.2, x.mean()
    assert 0.25 < x.std().item() < 0.8, x.std()


def test_bad_games_and_names_are_rejected(tmp_path):
    class Bad(Game):
        cycle = ("critic", "discriminator")

        def players(self, model):
            return {"critic": Player(model.critic), "generator": Player(model.generator)}

    with pytest.raises(ValueError, match=r"unknown player\(s\) \['discriminator'\]; the players are"):
        Trainer(_gan(0), Bad(), _loader(), _cfg(tmp_path))
    Bad.cycle = ("critic",)
    with pytest.raises(ValueError, match=r"\['generator'\] never appear"):
        Trainer(_gan(0), Bad(), _loader(), _cfg(tmp_path))

    class Shared(Bad):
        cycle = ("critic", "generator")

        def players(self, model):
            return {"critic": Player(model), "generator": Player(model.generator)}

    with pytest.raises(ValueError, match="share parameters"):
        Trainer(_gan(0), Shared(), _loader(), _cfg(tmp_path))
    trainer = Trainer(_gan(0), GANGame("gan"), _loader(), _cfg(tmp_path))
    with pytest.raises(AttributeError, match=r"several players; use trainer.optimizers\[name\]"):
        trainer.optimizer  # noqa: B018
    with pytest.raises(ValueError, match="after_step is for a single loss_fn"):
        Trainer(_gan(0), GANGame("gan"), _loader(), _cfg(tmp_path), after_step=lambda m: None)
    with pytest.raises(ValueError, match="unknown GAN family 'dcgan'"):
        GANGame("dcgan")
    with pytest.raises(ValueError, match="n_critic"):
        GANConfig(n_critic=0)
    with pytest.raises(ValueError, match="Player.optimizer"):
        Player(nn.Linear(1, 1), optimizer="lion")
    # A checkpoint of another game is refused with both cycles named.
    Trainer(_gan(0), GANGame("gan"), _loader(), _cfg(tmp_path / "g", steps=2)).fit()
    other = Trainer(_gan(0), GANGame("wgan_gp"), _loader(), _cfg(tmp_path / "w", steps=2))
    with pytest.raises(ValueError, match="player cycle"):
        other.load_checkpoint(latest_checkpoint(tmp_path / "g"))


def test_networks_validate_their_inputs():
    g = MLPGenerator(4, 2, num_classes=3)
    with pytest.raises(ValueError, match=r"z must have shape \(B, 4\)"):
        g(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels y must lie in \[0, 3\)"):
        g(torch.randn(5, 4), torch.full((5,), 3))
    with pytest.raises(ValueError, match="needs labels"):
        g(torch.randn(5, 4))
    with pytest.raises(ValueError, match="unconditional critic"):
        MLPCritic(2)(torch.randn(5, 2), torch.zeros(5, dtype=torch.long))


# --- Triple-GAN --------------------------------------------------------------------------------
def _triple(seed: int, n_labeled: int = 12) -> TripleGAN:
    torch.manual_seed(seed)
    x = torch.randn(n_labeled, 2)
    y = torch.arange(n_labeled) % 3
    return TripleGAN(
        MLPClassifier(2, 3, hidden=16),
        MLPGenerator(4, 2, hidden=16, num_classes=3),
        MLPCritic(2, hidden=16, num_classes=3),
        latent_dim=4,
        labeled_x=x,
        labeled_y=y,
    )


def test_all_class_scores_equal_per_label_calls():
    critic = MLPCritic(2, hidden=8, num_classes=3)
    x = torch.randn(5, 2)
    every = all_class_scores(critic, x)
    for k in range(3):
        torch.testing.assert_close(every[:, k], critic(x, torch.full((5,), k)))


def test_triple_gan_trains_and_resumes_exactly(tmp_path):
    game = dict(alpha=0.5, alpha_p=0.3, rp_start=2, labeled_batch=6)
    ref = Trainer(
        _triple(0), TripleGANGame(**game), _loader(), _cfg(tmp_path / "ref", steps=10, ckpt_every=4)
    )
    ref.fit()
    assert int(ref.model.classifier_steps) == 3  # cycle (D, C, G): steps 2, 5, 8
    assert "r_p/classifier" in (tmp_path / "ref" / "metrics.csv").read_text().splitlines()[0]

    run = tmp_path / "run"
    Trainer(_triple(0), TripleGANGame(**game), _loader(), _cfg(run, steps=10, ckpt_every=4)).fit()
    for ckpt in sorted((run / "checkpoints").iterdir())[1:]:  # keep only step 4 (mid-cycle)
        shutil.rmtree(ckpt)
    resumed = Trainer(_triple(7), TripleGANGame(**game), _loader(), _cfg(run, steps=10, ckpt_every=4))
    resumed.fit()
    for (name, a), b in zip(ref.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)

    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        TripleGANGame(alpha=1.5)
    with pytest.raises(ValueError, match="labels in"):
        TripleGAN(
            MLPClassifier(2, 3), MLPGenerator(4, 2, num_classes=3), MLPCritic(2, num_classes=3), 4,
            torch.randn(2, 2), torch.tensor([0, 3]),
        )  # fmt: skip
    with pytest.raises(ValueError, match="class-conditional"):
        TripleGAN(
            MLPClassifier(2, 3), MLPGenerator(4, 2), MLPCritic(2), 4, torch.randn(2, 2), torch.tensor([0, 1])
        )
