"""Push-T environment helpers: headless construction, block geometry and observation features.

The environment is ``gym_pusht/PushT-v0`` (PyPI ``gym-pusht``) with state observations
``[agent_x, agent_y, block_x, block_y, block_angle]`` in pixels and radians; ``block_x/y`` is the
body origin (middle of the bar's top edge in body coordinates), not the centre of gravity, and
the angle is wrapped to [0, 2π). Actions are agent target positions in pixels, [0, 512]².
"""

from __future__ import annotations

import os

import numpy as np

__all__ = [
    "ENV_IDS",
    "GOAL_POSE",
    "TEE_OUTLINE",
    "TEE_KEYPOINTS",
    "STATE_DIM",
    "ACTION_DIM",
    "make_env",
    "make_vector_env",
    "block_keypoints",
    "state_features",
    "feature_dim",
    "state_dim",
    "OBS_KINDS",
]

ENV_IDS = ("gym_pusht/PushT-v0",)
STATE_DIM = 5
ACTION_DIM = 2
GOAL_POSE = np.array([256.0, 256.0, np.pi / 4])
# The T's outline in body coordinates (pixels), counter-clockwise order of its 8 corners.
TEE_OUTLINE = np.array(
    [[-60, 0], [60, 0], [60, 30], [15, 30], [15, 120], [-15, 120], [-15, 30], [-60, 30]], dtype=np.float64
)
# The environment's 8 keypoints (vertices of the bar, then of the stem) in body coordinates.
TEE_KEYPOINTS = np.array(
    [[-60, 0], [60, 0], [60, 30], [-60, 30], [-15, 30], [15, 30], [15, 120], [-15, 120]], dtype=np.float64
)


def _check_env_id(env_id: str) -> None:
    if env_id not in ENV_IDS:
        raise ValueError(f"unknown environment id {env_id!r}; expected one of {list(ENV_IDS)}")


def make_env(env_id: str = "gym_pusht/PushT-v0", max_episode_steps: int = 300):
    """One headless Push-T environment with state observations."""
    _check_env_id(env_id)
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    import gym_pusht  # noqa: F401  (registers the environment)
    import gymnasium as gym

    return gym.make(env_id, obs_type="state", render_mode="rgb_array", max_episode_steps=max_episode_steps)


def make_vector_env(n: int, env_id: str = "gym_pusht/PushT-v0", max_episode_steps: int = 300):
    """``n`` Push-T environments stepped together (``gymnasium.vector.SyncVectorEnv``)."""
    _check_env_id(env_id)
    if n < 1:
        raise ValueError(f"number of environments must be >= 1, got {n}")
    import gymnasium as gym

    return gym.vector.SyncVectorEnv(
        [lambda: make_env(env_id, max_episode_steps) for _ in range(n)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


def block_keypoints(pose: np.ndarray, points: np.ndarray = TEE_KEYPOINTS) -> np.ndarray:
    """World coordinates of body points: pose (..., 3) = (x, y, angle) -> (..., K, 2) pixels."""
    pose = np.asarray(pose, dtype=np.float64)
    c, s = np.cos(pose[..., 2]), np.sin(pose[..., 2])
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (..., 2, 2)
    return np.einsum("...ij,kj->...ki", rot, points) + pose[..., None, :2]


# observation kind -> (raw state width, feature width); ``point``: a 2-D position (the two-way task).
OBS_KINDS = {"keypoints": (STATE_DIM, 2 + 2 * len(TEE_KEYPOINTS)), "state": (STATE_DIM, 6), "point": (2, 2)}


def feature_dim(kind: str) -> int:
    """Width of :func:`state_features` of the given kind."""
    if kind not in OBS_KINDS:
        raise ValueError(f"unknown observation kind {kind!r}; expected one of {sorted(OBS_KINDS)}")
    return OBS_KINDS[kind][1]


def state_dim(kind: str) -> int:
    """Width of the raw states :func:`state_features` takes for the given kind."""
    feature_dim(kind)
    return OBS_KINDS[kind][0]


def state_features(state: np.ndarray, kind: str = "keypoints") -> np.ndarray:
    """Observation features from states (..., 5) -> (..., D).

    ``keypoints``: agent xy and the block's 8 keypoints (D = 18, pixels), Diffusion Policy's
    low-dimensional observation (it uses 9 keypoints); ``state``: agent xy, block xy, cos and sin
    of the angle (D = 6), which removes the angle's wrap-around; ``point``: 2-D positions as they are.
    """
    state = np.asarray(state, dtype=np.float64)
    if state.shape[-1] != state_dim(kind):
        raise ValueError(
            f"expected {kind} states with {state_dim(kind)} values per row, got shape {state.shape}"
        )
    if kind == "point":
        return state
    if kind == "keypoints":
        kp = block_keypoints(state[..., 2:5]).reshape(*state.shape[:-1], -1)
        return np.concatenate([state[..., :2], kp], axis=-1)
    ang = state[..., 4:5]
    return np.concatenate([state[..., :4], np.cos(ang), np.sin(ang)], axis=-1)
