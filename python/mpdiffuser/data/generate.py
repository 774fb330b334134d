"""Local dataset generation from gymnasium MuJoCo v5 environments (DESIGN section 4).

Kinds, after D4RL:
  random         uniform random actions
  medium         rollouts of a SAC behaviour policy trained for `policy_steps` steps
  medium-replay  SAC's replay buffer from that training run
  medium-expert  medium rollouts plus rollouts of a policy trained for `expert_steps` steps
Behaviour policies are trained with stable-baselines3 SAC and cached next to the datasets.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mpdiffuser.data.dataset import Episode, OfflineDataset
from mpdiffuser.envs import make_env

KINDS = ("random", "medium", "medium-replay", "medium-expert")


@dataclass(frozen=True)
class GenerateConfig:
    env_id: str = "Hopper-v5"
    kind: str = "medium"
    transitions: int = 100_000  # transitions to roll out (random, medium, each half of medium-expert)
    policy_steps: int = 30_000  # SAC environment steps of the medium policy
    expert_steps: int = 200_000  # SAC environment steps of the expert policy (medium-expert)
    constrained: bool = False  # record velocity costs (DSRL-style)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got '{self.kind}'")
        if self.transitions < 1 or self.policy_steps < 1 or self.expert_steps < 1:
            raise ValueError("transitions, policy_steps and expert_steps must be positive")

    @property
    def name(self) -> str:
        tag = "-cost" if self.constrained else ""
        return f"{self.env_id.split('-')[0].lower()}-{self.kind}{tag}-s{self.seed}"


def train_behaviour_policy(env_id: str, steps: int, seed: int, cache_dir: Path, progress: bool = True,
                           constrained: bool = False):
    """A SAC policy trained for `steps` environment steps (cached). Returns (model, seconds)."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    path = cache_dir / f"sac-{env_id}-{steps}-s{seed}.zip"
    env = make_env(env_id, constrained=constrained)
    if path.exists():
        return SAC.load(path, env=env, device="cpu"), 0.0

    class Progress(BaseCallback):
        def _on_training_start(self) -> None:
            self.bar = tqdm(total=steps, desc=f"SAC {env_id}", disable=not progress, dynamic_ncols=True, leave=False)

        def _on_step(self) -> bool:
            self.bar.update(1)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    started = time.perf_counter()
    model = SAC("MlpPolicy", env, seed=seed, device="cpu", verbose=0, learning_starts=min(1000, steps // 2),
                buffer_size=max(steps, 1000))
    model.learn(total_timesteps=steps, callback=Progress())
    cache_dir.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model, time.perf_counter() - started


def rollout(env_id: str, policy, transitions: int, seed: int, constrained: bool, desc: str,
            progress: bool = True) -> list[Episode]:
    """Episodes of `policy(obs) -> action` (None: uniform random) until `transitions` steps."""
    env = make_env(env_id, constrained=constrained)
    env.action_space.seed(seed)
    episodes, done_steps, episode_index = [], 0, 0
    bar = tqdm(total=transitions, desc=desc, disable=not progress, dynamic_ncols=True, leave=False)
    while done_steps < transitions:
        obs, _ = env.reset(seed=seed + episode_index)
        observations, actions, rewards, costs = [obs], [], [], []
        terminated = truncated = False
        while not (terminated or truncated) and done_steps < transitions:
            action = env.action_space.sample() if policy is None else policy(obs)
            obs, reward, terminated, truncated, info = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            costs.append(info.get("cost", 0.0))
            done_steps += 1
            bar.update(1)
        episodes.append(Episode(np.array(observations), np.array(actions), np.array(rewards), bool(terminated),
                                np.array(costs) if constrained else None))
        episode_index += 1
    bar.close()
    return episodes


def _replay_episodes(model, constrained: bool) -> list[Episode]:
    """The SAC replay buffer as episodes (split at done flags; timeouts are not terminals)."""
    buf = model.replay_buffer
    n = buf.buffer_size if buf.full else buf.pos
    obs, nxt = buf.observations[:n, 0], buf.next_observations[:n, 0]
    act, rew = buf.actions[:n, 0], buf.rewards[:n, 0]
    done, timeout = buf.dones[:n, 0].astype(bool), buf.timeouts[:n, 0].astype(bool)
    episodes, start = [], 0
    for end in list(np.flatnonzero(done)) + ([n - 1] if not done[n - 1] else []):
        sl = slice(start, end + 1)
        observations = np.concatenate([obs[sl], nxt[end:end + 1]])
        costs = np.zeros(end + 1 - start, np.float32) if constrained else None
        episodes.append(Episode(observations, act[sl], rew[sl], bool(done[end] and not timeout[end]), costs))
        start = end + 1
    return episodes


def generate(config: GenerateConfig, out_dir: str | Path, progress: bool = True) -> Path:
    """Generate the dataset of `config` as `<out_dir>/<name>.hdf5` (reused if it exists)."""
    out_dir = Path(out_dir)
    path = out_dir / f"{config.name}.hdf5"
    if path.exists():
        return path
    started = time.perf_counter()
    cache = out_dir / "policies"
    stochastic = lambda m: (lambda o: m.predict(o, deterministic=False)[0])  # noqa: E731
    if config.kind == "random":
        episodes = rollout(config.env_id, None, config.transitions, config.seed, config.constrained, "random", progress)
    else:
        medium, _ = train_behaviour_policy(config.env_id, config.policy_steps, config.seed, cache, progress,
                                           config.constrained)
        if config.kind == "medium-replay":
            if config.constrained:
                raise ValueError("medium-replay with costs is not supported: the replay buffer has no cost column")
            episodes = _replay_episodes(medium, config.constrained)
        else:
            episodes = rollout(config.env_id, stochastic(medium), config.transitions, config.seed,
                               config.constrained, "medium rollouts", progress)
        if config.kind == "medium-expert":
            expert, _ = train_behaviour_policy(config.env_id, config.expert_steps, config.seed, cache, progress,
                                               config.constrained)
            episodes += rollout(config.env_id, stochastic(expert), config.transitions, config.seed + 10_000,
                                config.constrained, "expert rollouts", progress)
    metadata = {"env_id": config.env_id, "name": config.name, "recipe": dataclasses.asdict(config)
                | {"policy": "uniform random" if config.kind == "random" else "stable-baselines3 SAC (MlpPolicy, stochastic actions)"},
                "seconds": round(time.perf_counter() - started, 1)}
    return OfflineDataset(episodes, metadata).save_hdf5(path)
