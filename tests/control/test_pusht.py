"""Push-T Diffusion Policy: geometry against the environment, the expert's physics copy, the
replay-buffer layout, windows, policies, the paper preset and the two-way multimodality task."""

import json

import numpy as np
import pytest
import torch

from control.pusht.config import PRESETS, preset
from control.pusht.env import block_keypoints, make_env, state_features
from control.pusht.expert import PushExpert, rollout_expert
from control.pusht.policy import ChunkPolicy, make_windows, policy_loss, sampler_spec
from control.pusht.replay import ReplayBuffer, ReplayFormatError, read_replay, write_replay
from control.pusht.train import build_policy
from control.pusht.twoway import RADIUS, TwoWayTask, two_way_demos


def _pose(u):
    return np.array([u.block.position.x, u.block.position.y, u.block.angle])


def test_keypoints_match_the_environment():
    env = make_env()
    for seed in (0, 5):
        env.reset(seed=seed)
        u = env.unwrapped
        assert np.allclose(block_keypoints(_pose(u)), u.get_keypoints(u._block_shapes), atol=1e-9)
        obs = u.get_obs()
        # observed angle is wrapped modulo 2 pi; keypoints from the observation are the same
        feats = state_features(obs)
        assert np.allclose(feats[2:].reshape(8, 2), u.get_keypoints(u._block_shapes), atol=1e-6)
    env.close()


def test_expert_physics_copy_predicts_the_environment():
    """A planned push simulated in the expert's copy lands where the real environment does."""
    env = make_env()
    env.reset(seed=3)
    u = env.unwrapped
    expert = PushExpert(seed=0)
    for _ in range(3):
        push = expert.plan(np.array(u.agent.position), np.array(u.agent.velocity), _pose(u))
        expert.sim.set(np.array(u.agent.position), np.array(u.agent.velocity), _pose(u))
        predicted = expert.sim.run(push.targets)
        for target in push.targets:
            env.step(target)
        assert np.allclose(predicted[:2], _pose(u)[:2], atol=1.0)
        assert abs(predicted[2] - _pose(u)[2]) < 0.02
    env.close()


def test_expert_solves_an_episode():
    env = make_env()
    states, actions, rewards, ok = rollout_expert(env, PushExpert(seed=0), seed=1234)
    assert ok and rewards.max() == 1.0 and len(states) == len(actions) < 300
    env.close()


def test_unknown_environment_id():
    with pytest.raises(ValueError, match="unknown environment id 'PushT-v9'"):
        make_env("PushT-v9")
    with pytest.raises(ValueError, match="unknown environment id"):
        preset("quick", env_id="gym_pusht/PushT-v1")


def _buffer(lengths=(5, 7), kp=8):
    n = sum(lengths)
    rng = np.random.default_rng(0)
    return ReplayBuffer(
        {
            "state": rng.uniform(0, 512, (n, 5)).astype(np.float32),
            "action": rng.uniform(0, 512, (n, 2)).astype(np.float32),
            "keypoint": rng.uniform(0, 512, (n, kp, 2)).astype(np.float32),
        },
        np.cumsum(lengths),
    )


def test_replay_round_trip(tmp_path):
    buf = _buffer()
    write_replay(tmp_path / "r.zarr", buf)
    back = read_replay(tmp_path / "r.zarr")
    assert back.episode_ends.tolist() == [5, 12]
    for k in ("state", "action", "keypoint"):
        assert np.array_equal(back.arrays[k], buf.arrays[k])
    assert [len(e) for e in back.episodes("action")] == [5, 7]


def _official_store(path, ends=(3, 8), n=8, drop=None):
    """A synthetic store laid out like pusht_cchi_v7_replay.zarr (zarr format 2, 9 keypoints, img)."""
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    data = root.create_group("data")
    rng = np.random.default_rng(1)
    arrays = {
        "state": rng.uniform(0, 512, (n, 5)).astype(np.float32),
        "action": rng.uniform(0, 512, (n, 2)).astype(np.float32),
        "keypoint": rng.uniform(0, 512, (n, 9, 2)).astype(np.float32),
        "img": rng.integers(0, 255, (n, 96, 96, 3)).astype(np.uint8),
        "n_contacts": np.zeros((n, 1), dtype=np.float32),
    }
    for k, v in arrays.items():
        data.create_array(k, data=v, chunks=(4, *v.shape[1:]))
    if drop != "episode_ends":
        root.create_group("meta").create_array("episode_ends", data=np.array(ends, dtype=np.int64))
    return arrays


def test_reads_the_official_layout(tmp_path):
    arrays = _official_store(tmp_path / "pusht_cchi_v7_replay.zarr")
    buf = read_replay(tmp_path / "pusht_cchi_v7_replay.zarr")
    assert buf.n_episodes == 2 and buf.n_steps == 8
    assert np.array_equal(buf.arrays["keypoint"], arrays["keypoint"])
    assert "img" not in buf.arrays  # images are not loaded for the state policy
    assert buf.take(1).n_steps == 3


def test_bad_stores(tmp_path):
    _official_store(tmp_path / "a.zarr", drop="episode_ends")
    with pytest.raises(ReplayFormatError, match="missing meta/episode_ends"):
        read_replay(tmp_path / "a.zarr")
    _official_store(tmp_path / "b.zarr", ends=(3, 9))
    with pytest.raises(ReplayFormatError, match="end at the number of steps 8"):
        read_replay(tmp_path / "b.zarr")
    _official_store(tmp_path / "c.zarr", ends=(5, 3))
    with pytest.raises(ReplayFormatError, match="strictly increasing"):
        read_replay(tmp_path / "c.zarr")
    buf = _buffer()
    with pytest.raises(ReplayFormatError, match="inconsistent lengths"):
        ReplayBuffer({**buf.arrays, "action": buf.arrays["action"][:-1]}, buf.episode_ends)
    with pytest.raises(FileNotFoundError):
        read_replay(tmp_path / "missing.zarr")


def test_windows_pad_like_chi():
    f = [np.arange(5, dtype=np.float32)[:, None]]
    a = [10 + np.arange(5, dtype=np.float32)[:, None]]
    obs, act = make_windows(f, a, n_obs=2, n_pred=4)
    assert obs.shape == (5, 2, 1) and act.shape == (5, 4, 1)
    assert obs[0, :, 0].tolist() == [0, 0]  # first observation repeated
    assert act[0, :, 0].tolist() == [10, 10, 11, 12]
    assert obs[3, :, 0].tolist() == [2, 3]
    assert act[4, :, 0].tolist() == [13, 14, 14, 14]  # last action repeated


def _small_cfg(**kw):
    return preset("quick", down_dims=(8, 16), time_embed_dim=8, **kw)


def test_policy_horizon_and_checkpoint_errors(tmp_path):
    with pytest.raises(ValueError, match=r"n_pred=14 .* multiple of 4, e.g. \[4, 8, 12, 16\]"):
        preset("quick", n_pred=14)
    policy, data = build_policy(_small_cfg(), _buffer((20, 20)), "diffusion")
    assert len(data) == 40 and data.tensors[0].shape == (40, 2, 18) and data.tensors[1].shape == (40, 16, 2)
    assert data.tensors[0].abs().max() <= 1 + 1e-6  # min-max normalised
    with pytest.raises(ValueError, match=r"observation windows \(B, 2, 5\)"):
        policy.predict(np.zeros((1, 2, 4)))
    policy.save(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "policy.json").read_text())
    meta["obs_kind"] = "state"
    (tmp_path / "p" / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="inconsistent"):
        ChunkPolicy.load(tmp_path / "p")


def test_samplers_and_regression(tmp_path):
    torch.manual_seed(0)
    cfg = _small_cfg()
    policy, data = build_policy(cfg, _buffer((20, 20)), "diffusion")
    states = np.random.default_rng(0).uniform(100, 400, (3, 2, 5))
    for name, nfe in (("ddpm100", 100), ("ddim10", 10), ("dpm_solver++10", 10), ("dpm_solver++8", 8)):
        policy.sampler = name
        assert policy.nfe == nfe
        chunk = policy.predict(states)
        assert chunk.shape == (3, 16, 2) and np.isfinite(chunk).all()
        lo, hi = policy.act_norm.mins, policy.act_norm.maxs
        assert (chunk >= lo - 1e-3).all() and (chunk <= hi + 1e-3).all()
        assert policy.actions(states).shape == (3, 8, 2)
    with pytest.raises(ValueError, match="unknown sampler"):
        sampler_spec("euler10")
    policy.save(tmp_path / "d")
    back = ChunkPolicy.load(tmp_path / "d")
    back.sampler = policy.sampler = "ddim10"
    assert np.allclose(back.predict(states, seed=3), policy.predict(states, seed=3), atol=1e-5)
    reg, _ = build_policy(cfg, _buffer((20, 20)), "regression")
    batch = tuple(t[:8] for t in data.tensors)
    assert torch.isfinite(policy_loss(reg, batch)) and torch.isfinite(policy_loss(policy, batch))
    assert reg.predict(states).shape == (3, 16, 2) and reg.nfe == 1


@pytest.mark.parametrize("sampler", ["ddim10", "ddpm100"])
def test_samplers_match_diffusers_with_clipped_x0(sampler):
    """The policy's DDIM-10 and DDPM-100 chunks equal diffusers' DDIMScheduler / DDPMScheduler
    (squaredcos_cap_v2, T = 100, clip_sample=True) on the same network, noise and timesteps.
    An untrained network's x0 at t_max is far outside [-1, 1]; without clipping the chunks differ
    by up to the whole action range."""
    diffusers = pytest.importorskip("diffusers", reason="diffusers not installed: parity test skipped")
    torch.manual_seed(0)
    policy, _ = build_policy(_small_cfg(), _buffer((20, 20)), "diffusion")
    states = np.random.default_rng(0).uniform(100, 400, (4, 2, 5))
    policy.sampler = sampler
    ours = torch.as_tensor(policy.act_norm.normalize(policy.predict(states, seed=5)))
    cond = policy.encode(states)
    cfg = dict(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 16, 2, generator=gen)
    if sampler == "ddim10":  # 9 steps 99 -> 88 -> ... -> 0, then x0 at step 0 (alpha_prev = 1)
        sch = diffusers.DDIMScheduler(**cfg, set_alpha_to_one=True)
        sch.set_timesteps(9)
        sch.timesteps = torch.arange(99, -1, -11)
        kw = dict(use_clipped_model_output=True)
    else:
        sch = diffusers.DDPMScheduler(**cfg, variance_type="fixed_small")
        sch.set_timesteps(100)
        kw = dict(generator=gen)
    with torch.no_grad():
        for t in sch.timesteps:
            eps = policy.net(x, t.float().expand(4), global_cond=cond)
            x = sch.step(eps, int(t), x, **kw).prev_sample
    assert x.abs().max() == 1.0  # clipping was active
    assert torch.allclose(ours, x, atol=1e-4)


def test_paper_preset_builds_and_steps():
    """Chi et al.'s sizes (65M-parameter U-Net) build and take optimisation steps on CPU."""
    cfg = PRESETS["paper"]
    assert cfg.down_dims == (256, 512, 1024) and (cfg.n_obs, cfg.n_pred, cfg.n_act) == (2, 16, 8)
    policy, data = build_policy(cfg, _buffer((10, 10)), "diffusion")
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = tuple(t[:2] for t in data.tensors)
    before = next(policy.net.parameters()).detach().clone()
    for _ in range(2):
        loss = policy_loss(policy, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert not torch.equal(before, next(policy.net.parameters()))


def test_two_way_task():
    states, actions, sides = two_way_demos(40, seed=0)
    assert 0.3 < (sides < 0).mean() < 0.7
    for s, side in zip(states, sides, strict=True):
        # every demonstration passes on its side and never enters the obstacle
        band = np.abs(s[:, 1]) < 0.1
        assert np.all(np.sign(s[band, 0]) == side)
        assert np.linalg.norm(s, axis=-1).min() > RADIUS
    task = TwoWayTask(np.array([[0.0, -0.35]]))
    assert task.step(np.array([[0.0, 0.0]]))[0]  # a move into the disc is refused
    assert np.allclose(task.pos, [[0.0, -0.35]])


def test_demo_stage_writes_gif_strip_and_score(tmp_path):
    from PIL import Image

    from control.pusht.demo import demo_pusht

    lines = demo_pusht(tmp_path, seed=0, twoway_steps=2)
    gif = Image.open(tmp_path / "pusht_expert.gif")
    assert gif.n_frames > 5
    assert (tmp_path / "pusht_strip.png").stat().st_size > 0 and (tmp_path / "pusht_twoway.png").is_file()
    text = "\n".join(lines)
    assert "0.95)) 1.00, success True" in text and "| diffusion |" in text and "| regression |" in text
