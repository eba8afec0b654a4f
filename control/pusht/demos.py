"""Expert demonstrations for Push-T, cached under ``$ANNEAL_DATA`` in the replay-buffer layout."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from core.data import data_root

from .env import block_keypoints, make_env
from .expert import ExpertConfig, PushExpert, rollout_expert
from .replay import ReplayBuffer, read_replay, write_replay

__all__ = ["demo_path", "generate_demos", "DEMO_SEED_OFFSET", "EVAL_SEED_OFFSET"]

# Environment reset seeds: demonstrations use DEMO_SEED_OFFSET * (seed + 1) + i, evaluation
# EVAL_SEED_OFFSET + i, so no evaluation start is a training start.
DEMO_SEED_OFFSET = 10_000
EVAL_SEED_OFFSET = 1_000_000


def demo_path(n_episodes: int, seed: int) -> Path:
    return data_root() / "pusht" / f"expert-{n_episodes}ep-seed{seed}.zarr"


def generate_demos(
    n_episodes: int,
    seed: int = 0,
    path: str | os.PathLike | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Write ``n_episodes`` successful expert episodes (deterministic from ``seed``); cached.

    Episodes the expert fails (rare) are skipped and counted in the store's attributes. Work
    is checkpointed every 20 episodes beside the store, so an interrupted run resumes.
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    path = Path(path) if path is not None else demo_path(n_episodes, seed)
    if path.exists() and not force:
        read_replay(path)  # validates
        return path
    partial = path.with_name(path.name + ".partial.npz")
    states, actions, ends, failed, attempt = [], [], [], 0, 0
    if partial.is_file() and not force:
        z = np.load(partial)
        states, actions = [z["states"]], [z["actions"]]
        ends, failed, attempt = [int(e) for e in z["ends"]], int(z["failed"]), int(z["attempt"])
    env = make_env()
    bar = tqdm(total=n_episodes, initial=len(ends), desc="expert demos", disable=not progress)
    while len(ends) < n_episodes:
        expert = PushExpert(ExpertConfig(), seed=seed * 1_000_003 + attempt)
        s, a, _, ok = rollout_expert(env, expert, seed=DEMO_SEED_OFFSET * (seed + 1) + attempt)
        attempt += 1
        if not ok:
            failed += 1
            continue
        states.append(s.astype(np.float32))
        actions.append(a.astype(np.float32))
        ends.append((ends[-1] if ends else 0) + len(a))
        bar.update(1)
        if len(ends) % 20 == 0 and len(ends) < n_episodes:
            from core.data import atomic_write

            with atomic_write(partial) as tmp:
                np.savez(
                    tmp,
                    states=np.concatenate(states),
                    actions=np.concatenate(actions),
                    ends=np.array(ends),
                    failed=failed,
                    attempt=attempt,
                )
    bar.close()
    env.close()
    state = np.concatenate(states)
    buf = ReplayBuffer(
        {
            "state": state,
            "action": np.concatenate(actions),
            "keypoint": block_keypoints(state[:, 2:5].astype(np.float64)).astype(np.float32),
        },
        np.array(ends, dtype=np.int64),
        str(path),
    )
    write_replay(path, buf, attrs={"seed": seed, "expert_failures": failed, "attempts": attempt})
    partial.unlink(missing_ok=True)
    return path
