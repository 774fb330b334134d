"""Local dataset generation from gymnasium MuJoCo v5 environments (design section 4).

Kinds, after D4RL:
  random         uniform random actions
  medium         rollouts of a SAC behaviour policy trained for `policy_steps` steps
  medium-replay  SAC's replay buffer from that training run
  medium-expert  medium rollouts plus rollouts of a policy trained for `expert_steps` steps
  mixed          (constrained only) half rollouts of the medium policy, half of a cautious one
                 trained on reward - cost_penalty * cost (for as long, or cautious_steps): data of
                 mixed safety
  scripted       rollouts of the robot's scripted expert (control.scripted: FetchPickAndPlace's
                 pick-and-place controller)
Behaviour policies are trained with stable-baselines3 SAC and cached next to the datasets (with
their replay buffers, which medium-replay needs). `physics` rolls the policies out under changed
dynamics (novel-dynamics experiments); the policies themselves are trained on the nominal robot.
Costs are 1 per step over the robot's velocity limit: DSRL's, or `velocity_limit` m/s (a limit the
data's policies actually reach, when they are too slow for DSRL's).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mpdiffuser.data.dataset import Episode, OfflineDataset
from mpdiffuser.envs import (VELOCITY_LIMITS, CostPenalty, PhysicsChange, env_file_id, env_slug, make_env,
                             velocity_limit)

KINDS = ("random", "medium", "medium-replay", "medium-expert", "mixed", "scripted")


@dataclass(frozen=True)
class GenerateConfig:
    env_id: str = "Hopper-v5"
    kind: str = "medium"
    transitions: int = 100_000  # transitions to roll out (random, medium, each half of medium-expert)
    policy_steps: int = 30_000  # SAC environment steps of the medium policy
    expert_steps: int = 200_000  # SAC environment steps of the expert policy (medium-expert)
    constrained: bool = False  # record velocity costs (DSRL-style)
    seed: int = 0  # of the rollouts and, unless policy_seed says otherwise, of the behaviour policies' training
    policy_seed: int | None = None  # the behaviour policies' training seed (None: seed), to roll one policy out anew
    cost_penalty: float = 1.0  # mixed: the cautious policy's reward is reward - cost_penalty * cost
    cautious_steps: int | None = None  # mixed: SAC steps of the cautious policy (None: policy_steps)
    physics: PhysicsChange | None = None  # roll out under changed dynamics
    velocity_limit: float | None = None  # constrained: the speed limit in m/s (None: DSRL's, envs.VELOCITY_LIMITS)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got '{self.kind}'")
        if self.transitions < 1 or self.policy_steps < 1 or self.expert_steps < 1:
            raise ValueError("transitions, policy_steps and expert_steps must be positive")
        if self.kind == "mixed" and not self.constrained:
            raise ValueError("kind 'mixed' (mixed-safety data) needs constrained=True: safety is defined by costs")
        if self.kind == "scripted":
            from mpdiffuser.control.scripted import SCRIPTED

            if self.env_id not in SCRIPTED:
                raise ValueError(f"kind 'scripted' needs a robot with a scripted expert ({', '.join(SCRIPTED)}), "
                                 f"got {self.env_id}")
        if self.kind == "medium-replay" and self.constrained:
            raise ValueError("medium-replay with costs is not supported: the replay buffer has no cost column")
        if not self.cost_penalty >= 0.0:
            raise ValueError(f"cost_penalty must be >= 0, got {self.cost_penalty}")
        if self.cautious_steps is not None and self.cautious_steps < 1:
            raise ValueError(f"cautious_steps must be positive, got {self.cautious_steps}")
        if self.policy_seed == self.seed or self.kind in ("random", "scripted"):
            object.__setattr__(self, "policy_seed", None)  # one recipe, one name
        if self.cautious_steps == self.policy_steps or self.kind != "mixed":
            object.__setattr__(self, "cautious_steps", None)
        if self.velocity_limit is not None:
            if not self.constrained:
                raise ValueError("velocity_limit applies to constrained data only (constrained=True)")
            limit = velocity_limit(self.env_id, self.velocity_limit)  # checks it
            object.__setattr__(self, "velocity_limit", None if limit == VELOCITY_LIMITS.get(self.env_id) else limit)

    @property
    def cautious_policy_steps(self) -> int:
        """SAC steps of the mixed data's cautious policy."""
        return self.policy_steps if self.cautious_steps is None else self.cautious_steps

    @property
    def trained_with(self) -> int:
        """The behaviour policies' training seed."""
        return self.seed if self.policy_seed is None else self.policy_seed

    @property
    def name(self) -> str:
        tag = "-cost" if self.constrained else ""
        if self.velocity_limit is not None:
            tag += f"-v{self.velocity_limit:g}"
        if self.physics is not None and not self.physics.is_nominal:
            tag += f"-{self.physics.tag}"
        policy = "" if self.policy_seed is None else f"-policy{self.policy_seed}"
        return f"{env_slug(self.env_id)}-{self.kind}{tag}-s{self.seed}{policy}"

    def recipe(self) -> dict:
        """The fields the data of this kind depend on, as stored in the file; a cached file is
        reused only when they all match (medium data does not depend on expert_steps, say)."""
        unused = {"random": ("policy_steps", "expert_steps", "cost_penalty"),
                  "scripted": ("policy_steps", "expert_steps", "cost_penalty"),
                  "medium": ("expert_steps", "cost_penalty"),
                  "medium-replay": ("transitions", "expert_steps", "cost_penalty"),  # the whole replay buffer
                  "medium-expert": ("cost_penalty",), "mixed": ("expert_steps",)}[self.kind]
        recipe = {k: v for k, v in dataclasses.asdict(self).items() if k not in unused}
        for optional in ("policy_seed", "cautious_steps", "velocity_limit"):
            if recipe.get(optional) is None:
                recipe.pop(optional, None)  # as files made before the field existed record it
        return recipe


def train_behaviour_policy(env_id: str, steps: int, seed: int, cache_dir: Path, progress: bool = True,
                           cost_penalty: float = 0.0, limit: float | None = None):
    """A SAC policy trained for `steps` environment steps on the nominal robot, on reward minus
    cost_penalty * velocity cost when cost_penalty > 0 (cached, with its replay buffer); `limit`:
    the velocity limit of that cost (None: DSRL's). Returns (model, seconds)."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Logger

    penalized = cost_penalty > 0
    tag = f"-pen{cost_penalty:g}" if penalized else ""
    if penalized and limit is not None and velocity_limit(env_id, limit) != VELOCITY_LIMITS[env_id]:
        tag += f"-v{limit:g}"
    path = cache_dir / f"sac-{env_file_id(env_id)}-{steps}{tag}-s{seed}.zip"
    buffer_path = path.with_suffix(".replay.pkl")
    env = make_env(env_id, constrained=penalized, limit=limit if penalized else None)
    if penalized:
        env = CostPenalty(env, cost_penalty)
    if path.exists() and buffer_path.exists():
        model = SAC.load(path, env=env, device="cpu")
        model.load_replay_buffer(buffer_path)
        return model, 0.0

    class Progress(BaseCallback):
        def _on_training_start(self) -> None:
            self.bar = tqdm(total=steps, desc=f"SAC {env_id}", disable=None if progress else True, dynamic_ncols=True, leave=False)

        def _on_step(self) -> bool:
            self.bar.update(1)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    started = time.perf_counter()
    model = SAC("MlpPolicy", env, seed=seed, device="cpu", verbose=0, learning_starts=min(1000, steps // 2),
                buffer_size=max(steps, 1000))
    # SB3's default logger makes an empty /tmp/SB3-<date> folder per run, even at verbose=0.
    model.set_logger(Logger(folder=None, output_formats=[]))
    model.learn(total_timesteps=steps, callback=Progress())
    cache_dir.mkdir(parents=True, exist_ok=True)
    model.save_replay_buffer(buffer_path)
    model.save(path)
    return model, time.perf_counter() - started


def rollout(env_id: str, policy, transitions: int, seed: int, constrained: bool, desc: str,
            progress: bool = True, physics: PhysicsChange | None = None,
            limit: float | None = None) -> list[Episode]:
    """Episodes of `policy(obs) -> action` (None: uniform random) until `transitions` steps.

    Reproducible from `seed` alone: a stochastic policy draws from torch's generator, which is
    seeded here (and restored afterwards), so the data do not depend on what the process did before,
    such as training the policy instead of loading it from the cache."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _rollout(env_id, policy, transitions, seed, constrained, desc, progress, physics, limit)


def _rollout(env_id: str, policy, transitions: int, seed: int, constrained: bool, desc: str, progress: bool,
             physics: PhysicsChange | None, limit: float | None) -> list[Episode]:
    env = make_env(env_id, constrained=constrained, physics=physics, limit=limit)
    env.action_space.seed(seed)
    episodes, done_steps, episode_index = [], 0, 0
    bar = tqdm(total=transitions, desc=desc, disable=None if progress else True, dynamic_ncols=True, leave=False)
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
    env.close()
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


def generate(config: GenerateConfig, out_dir: str | Path, progress: bool = True,
             policy_dir: str | Path | None = None) -> Path:
    """Generate the dataset of `config` as `<out_dir>/<name>.hdf5`. An existing file is reused
    when it was made by the same recipe; one made by another recipe is an error, never reused.
    Behaviour policies are cached in `policy_dir` (default `<out_dir>/policies`), which several
    data directories may share: a policy depends only on env, steps, cost penalty and seed."""
    out_dir = Path(out_dir)
    path = out_dir / f"{config.name}.hdf5"
    if path.exists():
        _check_recipe(path, config)
        return path
    started = time.perf_counter()
    cache = Path(policy_dir) if policy_dir is not None else out_dir / "policies"
    c = config
    stochastic = lambda m: (lambda o: m.predict(o, deterministic=False)[0])  # noqa: E731
    run = lambda policy, n, seed, desc: rollout(c.env_id, policy, n, seed, c.constrained, desc, progress,  # noqa: E731
                                                 c.physics, c.velocity_limit)
    if c.kind == "random":
        episodes = run(None, c.transitions, c.seed, "random")
    elif c.kind == "scripted":
        from mpdiffuser.control.scripted import scripted_policy

        env = make_env(c.env_id)
        episodes = run(scripted_policy(c.env_id, env), c.transitions, c.seed, "scripted expert")
        env.close()
    else:
        medium, _ = train_behaviour_policy(c.env_id, c.policy_steps, c.trained_with, cache, progress)
        if c.kind == "medium-replay":
            episodes = _replay_episodes(medium, c.constrained)
        else:
            episodes = run(stochastic(medium), c.transitions, c.seed, "medium rollouts")
        if c.kind == "medium-expert":
            expert, _ = train_behaviour_policy(c.env_id, c.expert_steps, c.trained_with, cache, progress)
            episodes += run(stochastic(expert), c.transitions, c.seed + 10_000, "expert rollouts")
        if c.kind == "mixed":
            cautious, _ = train_behaviour_policy(c.env_id, c.cautious_policy_steps, c.trained_with, cache, progress,
                                                 c.cost_penalty, c.velocity_limit)
            episodes += run(stochastic(cautious), c.transitions, c.seed + 20_000, "cautious rollouts")
    policy = {"random": "uniform random", "scripted": "scripted expert (mpdiffuser.control.scripted)"}.get(
        c.kind, "stable-baselines3 SAC (MlpPolicy, stochastic actions)")
    metadata = {"env_id": c.env_id, "name": c.name, "recipe": c.recipe() | {"policy": policy},
                "seconds": round(time.perf_counter() - started, 1)}
    return OfflineDataset(episodes, metadata).save_hdf5(path)


def _check_recipe(path: Path, config: GenerateConfig) -> None:
    import json

    import h5py

    with h5py.File(path, "r") as f:
        meta = json.loads(f.attrs.get("mpdiffuser_metadata", "{}"))
    stored = meta.get("recipe", {})
    wanted = json.loads(json.dumps(config.recipe()))  # tuples and dataclasses as JSON has them
    stored = {"cost_penalty": 1.0, "physics": None} | stored  # files made before these fields existed
    if stored["physics"] is not None:  # and before a physics change had damping, joints and a name
        stored["physics"] = {"damping": 1.0, "joints": "", "name": ""} | stored["physics"]
    diff = sorted(k for k in wanted if stored.get(k) != wanted[k])
    if diff:
        raise ValueError(f"{path} was generated with another recipe (differs in {', '.join(diff)}); "
                         "delete it or choose another output directory")
