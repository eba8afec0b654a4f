import h5py
import numpy as np
import pytest

from control.data import DatasetError, load_d4rl, load_minari, write_d4rl
from control.maze2d.dataset import load_maze2d, make_dataset
from control.maze2d.generate import generate_stream
from control.maze2d.mazes import d4rl_action_to_gym, d4rl_to_gym, get_maze
from control.sequence import LimitsNormalizer, SequenceDataset, episode_bounds


def small(n=20):
    rng = np.random.default_rng(0)
    return {
        "observations": rng.normal(size=(n, 4)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        "rewards": np.zeros(n, np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": np.arange(n) % 7 == 6,
        "infos/goal": np.zeros((n, 2), np.float32),
    }


def test_hdf5_round_trip(tmp_path):
    d = small()
    path = write_d4rl(tmp_path / "x.hdf5", d, {"coordinates": "gymnasium-robotics"})
    out, attrs = load_d4rl(path)
    assert attrs["coordinates"] == "gymnasium-robotics"
    for k in d:
        np.testing.assert_array_equal(out[k], d[k])
    assert not list(tmp_path.glob("*.tmp"))


def test_d4rl_cache_lookup_and_frame(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    d = small()
    (tmp_path / ".d4rl" / "datasets").mkdir(parents=True)
    with h5py.File(tmp_path / ".d4rl/datasets/maze2d-umaze-v1.hdf5", "w") as f:
        for k, v in d.items():
            f[k] = v
    m = get_maze("umaze")
    out = load_maze2d("maze2d-umaze-v1", m)
    np.testing.assert_allclose(out["observations"], d4rl_to_gym(d["observations"], m), atol=1e-6)
    np.testing.assert_allclose(out["actions"], d4rl_action_to_gym(d["actions"]))
    with pytest.raises(FileNotFoundError, match="no D4RL dataset"):
        load_d4rl("maze2d-nothing-v1")


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda d: d.pop("timeouts"), r"missing key\(s\) \['timeouts'\]"),
        (
            lambda d: d.update(actions=d["actions"][:-1]),
            "'actions' has length 19 but 'observations' has length 20",
        ),
        (
            lambda d: d["observations"].__setitem__((3, 1), np.nan),
            "'observations' has 1 NaN/inf value.*row 3",
        ),
    ],
)
def test_bad_hdf5(tmp_path, change, match):
    d = small()
    change(d)
    with h5py.File(tmp_path / "bad.hdf5", "w") as f:
        for k, v in d.items():
            f[k] = v
    with pytest.raises(DatasetError, match=match):
        load_d4rl(tmp_path / "bad.hdf5")


def test_generation_deterministic(data_dir):
    m = get_maze("umaze")
    a = generate_stream(m, 3000, seed=5)
    b = generate_stream(m, 3000, seed=5)
    c = generate_stream(m, 3000, seed=6)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["observations"], c["observations"])
    p1 = make_dataset(m, 3000, seed=5)
    bytes1 = p1.read_bytes()
    p2 = make_dataset(m, 3000, seed=5, force=True)
    assert p1 == p2 and p2.read_bytes() == bytes1
    assert str(p1).startswith(str(data_dir))
    data, attrs = load_d4rl(p1)
    assert set(data) >= {
        "observations",
        "actions",
        "rewards",
        "terminals",
        "timeouts",
        "infos/goal",
        "infos/qpos",
        "infos/qvel",
    }
    assert data["timeouts"].sum() > 5  # goals reached and redrawn
    assert np.abs(data["actions"]).max() <= 1.0


def test_minari_load(tmp_path, monkeypatch):
    import minari
    from minari.data_collector import EpisodeBuffer

    from control.maze2d.sim import make_env

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    m = get_maze("umaze")
    env = make_env(m, max_episode_steps=30)
    rng = np.random.default_rng(0)
    buffers = []
    for ep in range(3):
        obs, _ = env.reset(seed=ep)
        steps = {k: [v] for k, v in obs.items()}
        actions, rewards = [], []
        for _ in range(30):
            a = rng.uniform(-1, 1, 2).astype(np.float32)
            obs, r, *_ = env.step(a)
            for k, v in obs.items():
                steps[k].append(v)
            actions.append(a)
            rewards.append(r)
        buffers.append(
            EpisodeBuffer(
                id=ep,
                observations={k: np.stack(v) for k, v in steps.items()},
                actions=np.stack(actions),
                rewards=rewards,
                terminations=[False] * 30,
                truncations=[False] * 29 + [True],
                infos={},
            )
        )
    minari.create_dataset_from_buffers("pointmaze/test-v0", buffers, env=env, algorithm_name="random")
    env.close()
    data, attrs = load_minari("pointmaze/test-v0")
    assert data["observations"].shape == (90, 4)
    assert data["timeouts"].sum() == 3 and data["infos/goal"].shape == (90, 2)
    folder = tmp_path / "minari" / "pointmaze" / "test-v0"
    data2 = load_maze2d(f"minari:{folder}", m)
    np.testing.assert_array_equal(data2["observations"], data["observations"])


def test_sequence_dataset_windows_and_normalizer():
    n = 50
    obs = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    act = np.zeros((n, 2), np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[[9, 39]] = True  # episodes [0,10), [10,40), [40,50)
    bounds = episode_bounds(timeouts)
    assert bounds == [(0, 10), (10, 40), (40, 50)]
    ds = SequenceDataset(obs, act, bounds, horizon=10)
    assert len(ds) == 1 + 21 + 1
    x = ds[0]
    assert x.shape == (10, 6) and x.min() >= -1 and x.max() <= 1
    norm = LimitsNormalizer.fit(obs)
    np.testing.assert_allclose(norm.unnormalize(norm.normalize(obs)), obs, rtol=1e-5)
    with pytest.raises(ValueError, match="horizon 64"):
        SequenceDataset(obs, act, bounds, horizon=64)
