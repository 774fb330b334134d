"""Scripted controllers: the experts of robots whose expert is a program, not a trained policy
(`generate-data --kind scripted`).

FetchPickAndPlace: the standard pick-and-place controller, stateless (its phase read off the
observation, so an episode that loses the object starts over by itself): over the object with the
gripper open, down onto it, close, then carry it to the goal. Positions move by gain x error per
step (an action of 1 moves the gripper 5 cm). It succeeds in 50 of 50 episodes from seeds 0-49
(tests/python/test_fetch.py checks 20).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class PickAndPlace:
    """The Fetch pick-and-place expert on make_env's flattened observations."""

    gain = 10.0
    hover = 0.05  # m above the object before descending
    aligned = 0.01  # m: the gripper is over the object when closer than this in x and y
    holding = 0.02  # m: the object is in the gripper when closer than this ...
    closed = 0.06  # m: ... and the fingers are narrower than this

    def __init__(self, space: gym.spaces.Dict) -> None:
        self.space = space  # the Dict observation space the flat observations were made from

    def __call__(self, flat: np.ndarray) -> np.ndarray:
        obs = gym.spaces.utils.unflatten(self.space, np.asarray(flat, dtype=np.float64))
        o, goal = obs["observation"], obs["desired_goal"]
        grip, obj, width = o[0:3], o[3:6], o[9] + o[10]  # gripper and object positions, finger widths
        rel = obj - grip

        def toward(target, fingers: float) -> np.ndarray:
            return np.append(np.clip(self.gain * (target - grip), -1.0, 1.0), fingers).astype(np.float32)

        if np.linalg.norm(rel) < self.holding and width < self.closed:
            return toward(goal, -1.0)  # carry it, closed
        if np.linalg.norm(rel[:2]) > self.aligned:
            return toward(obj + np.array([0.0, 0.0, self.hover]), 1.0)  # over it, open
        if rel[2] < -0.005:
            return toward(obj, 1.0)  # down onto it, open
        return np.array([0.0, 0.0, 0.0, -1.0], dtype=np.float32)  # close


SCRIPTED = {"FetchPickAndPlace-v4": PickAndPlace}  # env id -> its scripted expert (made from the Dict space)


def scripted_policy(env_id: str, env: gym.Env):
    """The scripted expert of `env_id` for the flattened observations of `env` (make_env's)."""
    if env_id not in SCRIPTED:
        raise ValueError(f"no scripted controller for {env_id}; the scripted robots are {', '.join(SCRIPTED)}")
    return SCRIPTED[env_id](env.unwrapped.observation_space)
