"""Receding-horizon execution of chunk policies in vectorised Push-T environments, and the
expert on the same seeded starts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from .demos import EVAL_SEED_OFFSET
from .env import make_env, make_vector_env
from .expert import ExpertConfig, PushExpert, rollout_expert

__all__ = ["EvalResult", "evaluate_policy", "evaluate_expert", "eval_seeds"]


def eval_seeds(episodes: int, seed: int = 0) -> list[int]:
    """Environment reset seeds of the evaluation episodes (disjoint from the demonstrations')."""
    return [EVAL_SEED_OFFSET + 1000 * seed + i for i in range(episodes)]


@dataclass
class EvalResult:
    """Per-episode results: max reward (= clip(coverage / 0.95)), success, length, paths."""

    max_reward: np.ndarray
    success: np.ndarray
    length: np.ndarray
    seconds: float
    agent_paths: list[np.ndarray] = field(default_factory=list)

    def summary(self) -> dict:
        n = len(self.max_reward)
        se = float(self.max_reward.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
        return {
            "mean_max_coverage": float(self.max_reward.mean()),
            "mean_max_coverage_stderr": se,
            "success_rate": float(self.success.mean()),
            "mean_length": float(self.length.mean()),
            "episodes": n,
        }


def evaluate_policy(
    policy,
    episodes: int,
    seed: int = 0,
    max_steps: int = 300,
    n_envs: int | None = None,
    progress: bool = False,
) -> EvalResult:
    """Run ``policy`` (a ``ChunkPolicy``) on the seeded starts, ``n_envs`` environments at a time.

    Every ``n_act`` steps each running environment's last ``n_obs`` states (the first state
    repeated at the start) go through one batched ``policy.actions`` call; the chunk is executed
    open loop. An episode ends at success (coverage > 0.95) or after ``max_steps`` steps.
    """
    seeds = eval_seeds(episodes, seed)
    n_envs = min(n_envs or episodes, episodes)
    max_r, succ, length, paths = [], [], [], []
    t0 = time.perf_counter()
    bar = tqdm(total=episodes, desc=f"rollouts {getattr(policy, 'sampler', '')}", disable=not progress)
    for lo in range(0, episodes, n_envs):
        batch = seeds[lo : lo + n_envs]
        r, s, n, p = _run_batch(policy, batch, max_steps, seed=seed * 7919 + lo)
        max_r += r
        succ += s
        length += n
        paths += p
        bar.update(len(batch))
    bar.close()
    return EvalResult(np.array(max_r), np.array(succ), np.array(length), time.perf_counter() - t0, paths)


def _run_batch(policy, seeds: list[int], max_steps: int, seed: int):
    n = len(seeds)
    env = make_vector_env(n, max_episode_steps=max_steps)
    obs, _ = env.reset(seed=seeds)
    hist = np.repeat(obs[:, None], policy.n_obs, axis=1)  # (n, n_obs, 5)
    active = np.ones(n, dtype=bool)
    max_r = np.zeros(n)
    success = np.zeros(n, dtype=bool)
    length = np.zeros(n, dtype=int)
    paths = [[o[:2].copy()] for o in obs]
    step, call = 0, 0
    while active.any() and step < max_steps:
        chunk = policy.actions(hist, seed=seed + call)  # (n, n_act, 2); finished envs are ignored
        call += 1
        for k in range(chunk.shape[1]):
            obs, reward, term, trunc, info = env.step(chunk[:, k].astype(np.float64))
            step += 1
            for i in np.flatnonzero(active):
                max_r[i] = max(max_r[i], reward[i])
                length[i] += 1
                paths[i].append(obs[i, :2].copy())
                if term[i] or trunc[i]:
                    active[i] = False
                    success[i] = bool(term[i])
            hist = np.concatenate([hist[:, 1:], obs[:, None]], axis=1)
            if not active.any() or step >= max_steps:
                break
    env.close()
    return max_r.tolist(), success.tolist(), length.tolist(), [np.array(p) for p in paths]


def evaluate_expert(episodes: int, seed: int = 0, max_steps: int = 300, progress: bool = False) -> EvalResult:
    """The push-planner expert on the same seeded starts (the calibration row)."""
    env = make_env(max_episode_steps=max_steps)
    max_r, succ, length = [], [], []
    t0 = time.perf_counter()
    for i, s in enumerate(tqdm(eval_seeds(episodes, seed), desc="rollouts expert", disable=not progress)):
        _, a, r, ok = rollout_expert(env, PushExpert(ExpertConfig(), seed=seed * 1_000_003 + i), s, max_steps)
        max_r.append(float(r.max()) if len(r) else 0.0)
        succ.append(ok)
        length.append(len(a))
    env.close()
    return EvalResult(np.array(max_r), np.array(succ), np.array(length), time.perf_counter() - t0)
