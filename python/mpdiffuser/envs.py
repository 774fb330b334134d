"""Gymnasium MuJoCo v5 environments as mpdiffuser uses them, and D4RL-style score references."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import re
import warnings
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

SUPPORTED = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5")

# Goal-conditioned robots of gymnasium-robotics (the `fetch` extra, in an environment of its own:
# its Fetch robots fail on MuJoCo 3.3 and newer, so they run on MuJoCo 3.2.7 while the locomotion
# results keep theirs). Their Dict observations are flattened by gymnasium's FlattenObservation:
# the Dict space's keys in sorted order (Fetch: achieved_goal 3, desired_goal 3, observation 25).
ROBOTICS_PREFIXES = ("Fetch",)
ROBOTICS_PINS = {"gymnasium-robotics": "1.4.2", "mujoco": "3.2.7"}
ROBOTICS_INSTALL = (f"`bash scripts/install.sh --fetch` (gymnasium-robotics {ROBOTICS_PINS['gymnasium-robotics']} "
                    f"on MuJoCo {ROBOTICS_PINS['mujoco']}, in an environment of its own, .venv-fetch)")

# Safety-Gymnasium velocity limits (m/s) used by DSRL's velocity tasks (Ant: planar torso speed).
VELOCITY_LIMITS = {"Hopper-v5": 0.7402, "Walker2d-v5": 2.3415, "HalfCheetah-v5": 3.2096, "Ant-v5": 2.6222}


@dataclass(frozen=True)
class ScoreReference:
    """Returns that map a raw return to a D4RL-normalized score 100 (R - random) / (expert - random)."""

    random: float
    expert: float
    source: str

    def normalize(self, episode_return: float) -> float:
        return 100.0 * (episode_return - self.random) / (self.expert - self.random)


# D4RL's published reference returns (Fu et al. 2020, infos.py; the -v2 environments). Our v5
# environments share the reward definitions; the random returns we measured on v5 are stated in
# docs/results.md beside these.
SCORE_REFERENCES = {
    "Hopper-v5": ScoreReference(-20.272305, 3234.3, "D4RL hopper reference returns"),
    "Walker2d-v5": ScoreReference(1.629008, 4592.3, "D4RL walker2d reference returns"),
    "HalfCheetah-v5": ScoreReference(-280.178953, 12135.0, "D4RL halfcheetah reference returns"),
    "Ant-v5": ScoreReference(-325.6, 3879.7, "D4RL ant reference returns"),
}


class VelocityCost(gym.Wrapper):
    """Adds info['cost'] = 1 for each step whose forward speed (Ant: planar torso speed) exceeds the limit."""

    def __init__(self, env: gym.Env, limit: float):
        super().__init__(env)
        self.limit = float(limit)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        vx = float(info.get("x_velocity", 0.0))
        speed = float(np.hypot(vx, info.get("y_velocity", 0.0))) if "y_velocity" in info else vx
        info["cost"] = float(speed > self.limit)
        return obs, reward, terminated, truncated, info


@dataclass(frozen=True)
class PhysicsChange:
    """Changed dynamics (novel-dynamics experiments): every body's mass and inertia and every geom's
    sliding friction scaled by the given factors; the gear (gain) of the actuators and the damping
    of the joints scaled too, of every joint, or with `joints` (a regular expression matched
    against the whole joint name) of those joints only: a defect of one leg or one knee. A named
    defect (DEFECTS) carries its `name`, which is its tag."""

    mass: float = 1.0
    friction: float = 1.0
    gear: float = 1.0
    damping: float = 1.0
    joints: str = ""  # the joints whose actuators' gear and damping change ("": every joint)
    name: str = ""  # a defect's name (DEFECTS), used as its tag

    def __post_init__(self) -> None:
        for name in FACTORS:
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0.0):
                raise ValueError(f"PhysicsChange.{name} must be a positive finite factor, got {value}")
        if self.joints:
            try:
                re.compile(self.joints)
            except re.error as exc:
                raise ValueError(f"PhysicsChange.joints {self.joints!r} is not a regular expression: {exc}") from None

    @property
    def is_nominal(self) -> bool:
        return all(getattr(self, n) == 1.0 for n in FACTORS)

    @property
    def tag(self) -> str:
        """'nominal', a defect's name, or a file-name-safe summary such as 'mass1.5-gear0.7'."""
        if self.name:
            return self.name
        parts = [f"{n}{getattr(self, n):g}" for n in FACTORS if getattr(self, n) != 1.0]
        joints = "".join(c if c.isalnum() else "_" for c in self.joints)
        return "-".join(parts + ([f"joints_{joints}"] if self.joints else [])) or "nominal"

    @classmethod
    def parse(cls, text: str) -> "PhysicsChange":
        """'mass=1.5,gear=0.7' -> PhysicsChange(mass=1.5, gear=0.7), 'gear=0.5,joints=.*_left_joint',
        or a defect's name such as 'weak-left-leg' (the command line's forms)."""
        if text.strip() in DEFECTS:
            return DEFECTS[text.strip()]
        factors: dict = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or name not in (*FACTORS, "joints"):
                raise ValueError(f"physics change {text!r}: expected name=value items with name "
                                 f"{', '.join(FACTORS)} or joints, or a defect among {', '.join(DEFECTS)}; "
                                 f"got {item!r}")
            if name == "joints":
                factors[name] = value.strip()
                continue
            try:
                factors[name] = float(value)
            except ValueError:
                raise ValueError(f"physics change {text!r}: {value!r} is not a number") from None
        if not any(n in factors for n in FACTORS):
            raise ValueError(f"physics change {text!r} names no factor")
        return cls(**factors)

    def apply(self, env: gym.Env) -> gym.Env:
        model = env.unwrapped.model
        model.body_mass[:] *= self.mass
        model.body_inertia[:] *= self.mass
        model.geom_friction[:, 0] *= self.friction
        joints = range(model.njnt)
        if self.joints:
            joints = [j for j in joints if re.fullmatch(self.joints, model.joint(j).name)]
            if not joints:
                names = ", ".join(model.joint(j).name for j in range(model.njnt))
                raise ValueError(f"no joint of {env.spec.id if env.spec else 'this robot'} matches "
                                 f"{self.joints!r} (its joints: {names})")
        for a in range(model.nu):
            if model.actuator_trntype[a] == 0 and model.actuator_trnid[a, 0] in joints:  # a joint's actuator
                model.actuator_gear[a, 0] *= self.gear
        for j in joints:
            start = model.jnt_dofadr[j]
            width = {0: 6, 1: 3}.get(int(model.jnt_type[j]), 1)  # free, ball, slide/hinge joints' dofs
            model.dof_damping[start:start + width] *= self.damping
        return env


FACTORS = ("mass", "friction", "gear", "damping")  # PhysicsChange's factors
# Defects of the kind a real robot gets, by name (--physics NAME): Walker2d's joints.
DEFECTS = {
    "weak-left-leg": PhysicsChange(gear=0.5, joints=".*_left_joint", name="weak-left-leg"),
    "damped-right-knee": PhysicsChange(damping=40.0, joints="leg_joint", name="damped-right-knee"),
}


def velocity_limit(env_id: str, limit: float | None = None) -> float:
    """The speed limit of a constrained robot: `limit` (m/s) when given, else DSRL's."""
    env_id = split_env_id(env_id)[0]
    if limit is None:
        if env_id not in VELOCITY_LIMITS:
            raise ValueError(f"{env_id} has no DSRL velocity limit: give the limit in m/s (--velocity-limit)")
        return VELOCITY_LIMITS[env_id]
    if not (np.isfinite(limit) and limit > 0.0):
        raise ValueError(f"the velocity limit must be a positive speed in m/s, got {limit}")
    return float(limit)


def register_robotics(env_id: str | None) -> None:
    """Registers gymnasium-robotics' environments when `env_id` is one of theirs and gymnasium does
    not know it yet; ValueError, saying how to install them, when they cannot run here."""
    if env_id is None or env_id in gym.registry or not env_id.startswith(ROBOTICS_PREFIXES):
        return
    import mujoco

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # its import prints a note on Adroit's reward versions
            import gymnasium_robotics
    except ImportError:
        raise ValueError(f"{env_id} needs the fetch extra: {ROBOTICS_INSTALL}") from None
    if tuple(int(x) for x in mujoco.__version__.split(".")[:2]) >= (3, 3):
        raise ValueError(f"{env_id}: gymnasium-robotics' Fetch robots fail on MuJoCo {mujoco.__version__} (3.3 and "
                         f"newer); use the fetch extra's MuJoCo {ROBOTICS_PINS['mujoco']}: {ROBOTICS_INSTALL}")
    gym.register_envs(gymnasium_robotics)


# Environment options (gymnasium.make's keyword arguments) travel inside the environment id, so
# that the data, the bundle, the model file and every evaluation name the same robot:
# "Hopper-v5[exclude_current_positions_from_observation=false]", keys sorted, values as JSON.
_OPTIONS = re.compile(r"^(?P<base>[^\[\]]+)\[(?P<options>[^\[\]]*)\]$")


def parse_env_option(text: str) -> tuple[str, object]:
    """KEY=VALUE -> (key, value): VALUE as JSON (true, 1.5, "text") when it parses, else the text."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise ValueError(f"an environment option is KEY=VALUE with KEY a Python name, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def with_env_options(env_id: str, options: dict) -> str:
    """The id of `env_id` made with gymnasium.make(env_id, **options): env_id itself without options."""
    base, given = split_env_id(env_id)
    merged = given | dict(options)
    if not merged:
        return base
    return f"{base}[{','.join(f'{k}={json.dumps(merged[k])}' for k in sorted(merged))}]"


def split_env_id(env_id: str) -> tuple[str, dict]:
    """(gymnasium id, its options) of an id that may carry options (with_env_options)."""
    found = _OPTIONS.match(env_id)
    if found is None:
        if "[" in env_id or "]" in env_id:
            raise ValueError(f"environment id {env_id!r}: options go in one trailing [KEY=VALUE,...]")
        return env_id, {}
    text = found["options"]
    return found["base"], dict(parse_env_option(item) for item in _split_options(text)) if text else {}


def _split_options(text: str) -> list[str]:
    """Split KEY=VALUE,KEY=VALUE at the commas outside JSON strings."""
    items, current, quoted = [], "", False
    for ch in text:
        if ch == '"' and not current.endswith("\\"):
            quoted = not quoted
        if ch == "," and not quoted:
            items.append(current)
            current = ""
        else:
            current += ch
    return [*items, current]


def _options_digest(env_id: str) -> str:
    """"" for an id without options, else "-o" and six hex digits of the canonical id."""
    base, options = split_env_id(env_id)
    return f"-o{hashlib.sha256(with_env_options(base, options).encode()).hexdigest()[:6]}" if options else ""


def env_slug(env_id: str) -> str:
    """A short file-name part for a robot: "hopper"; with options, "hopper-o" and a digest of them."""
    return split_env_id(env_id)[0].split("-")[0].lower() + _options_digest(env_id)


def env_file_id(env_id: str) -> str:
    """The id in file names: itself ("Hopper-v5"), or with options its base and their digest."""
    return split_env_id(env_id)[0] + _options_digest(env_id)


def make_env(env_id: str, constrained: bool = False, physics: PhysicsChange | None = None,
             limit: float | None = None, **kwargs) -> gym.Env:
    """A v5 MuJoCo env, or any registered gymnasium environment whose observation and action
    spaces are 1-D boxes; Ant without contact forces in its observation (27 dims); with
    `constrained`, info['cost'] from the velocity limit (`limit` m/s, default DSRL's for the four
    built-in robots; other robots need one and must report info['x_velocity']); with `physics`,
    changed dynamics (MuJoCo environments); a Dict observation (goal-conditioned robots, such as
    gymnasium-robotics' Fetch: register_robotics) flattened by FlattenObservation, keys in sorted
    order. kwargs go to gymnasium.make, after the options the id carries (with_env_options)."""
    if limit is not None and not constrained:
        raise ValueError("a velocity limit applies to constrained environments only")
    full_id = env_id
    env_id, options = split_env_id(env_id)
    kwargs = options | kwargs
    speed_limit = velocity_limit(env_id, limit) if constrained else None
    if env_id == "Ant-v5":
        kwargs.setdefault("include_cfrc_ext_in_observation", False)
    register_robotics(env_id)
    try:
        with _quiet_known_mujoco_warnings():
            env = gym.make(env_id, **kwargs)
    except TypeError as exc:  # an option the environment does not take
        raise ValueError(f"{full_id}: {exc}") from None
    except gym.error.Error as exc:
        raise ValueError(f"unknown environment {env_id!r}: {exc}") from None
    if isinstance(env.observation_space, gym.spaces.Dict):
        env = gym.wrappers.FlattenObservation(env)
    for what, space in (("observation", env.observation_space), ("action", env.action_space)):
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            env.close()
            raise ValueError(f"{env_id}: its {what} space is {space}; mpdiffuser plans with 1-D Box observations "
                             "and actions (flatten an image observation into a vector first)")
    if physics is not None:
        if not hasattr(env.unwrapped, "model"):
            env.close()
            raise ValueError(f"{env_id} is not a MuJoCo environment: its physics cannot be changed")
        physics.apply(env)
    return VelocityCost(env, speed_limit) if constrained else env


# MuJoCo 4 warns about gymnasium's own robot files on every load: HalfCheetah's XML sets the
# deprecated compiler attribute settotalmass (the mass still comes out as 14, as before)
KNOWN_MUJOCO_WARNINGS = ("compiler attribute 'settotalmass' is deprecated",)


@contextlib.contextmanager
def _quiet_known_mujoco_warnings():
    """While building an env: drop MuJoCo's warnings about gymnasium's own files (above), which a
    user can do nothing about and which printed once per episode; any other MuJoCo warning is
    raised as a Python warning instead of printed."""
    import mujoco

    def handler(message: str) -> None:
        if not message.startswith(KNOWN_MUJOCO_WARNINGS):
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(handler)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


class CostPenalty(gym.Wrapper):
    """reward - penalty * info['cost']: trains cautious behaviour policies for mixed-safety data."""

    def __init__(self, env: gym.Env, penalty: float):
        super().__init__(env)
        self.penalty = float(penalty)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward - self.penalty * float(info["cost"]), terminated, truncated, info


def action_bounds(env_id: str | None) -> tuple:
    """(low, high) of a registered environment's action space, or (None, None) when it cannot be
    made here (an unknown id, a missing simulator)."""
    if env_id is None:
        return None, None
    try:
        register_robotics(env_id)
        env = gym.make(env_id)
        space = env.action_space
        env.close()
    except Exception:  # gymnasium raises many kinds for an unknown or unmakeable environment
        return None, None
    return (space.low, space.high) if hasattr(space, "low") else (None, None)


@functools.lru_cache(maxsize=64)
def goal_dims(env_id: str | None) -> tuple[int, ...]:
    """The flattened observation's indices of a goal-conditioned robot's desired goal (the part of
    the state a plan keeps fixed: BundleSpec.fixed_state_dims); () for other robots and for an
    environment gymnasium does not know."""
    if env_id is None or not registered(env_id):
        return ()
    env = make_env(env_id)
    try:
        space = env.unwrapped.observation_space
        if not isinstance(space, gym.spaces.Dict) or "desired_goal" not in space.spaces:
            return ()
        at = 0
        for key, sub in space.spaces.items():  # FlattenObservation's order
            size = int(gym.spaces.flatdim(sub))
            if key == "desired_goal":
                return tuple(range(at, at + size))
            at += size
        return ()
    finally:
        env.close()


def space_dims(env_id: str) -> tuple[int, int]:
    """(observation dim, action dim) of an environment; ValueError for an unknown one."""
    env = make_env(env_id)
    dims = int(env.observation_space.shape[0]), int(env.action_space.shape[0])
    env.close()
    return dims


def check_data_fits(env_id: str, state_dim: int, action_dim: int, what: str = "the data") -> None:
    """One check and one message everywhere data meet a robot (train, mpd.fit, data inspect): the
    data's dimensions must be the environment's; an unknown environment is refused by name."""
    dx, du = space_dims(env_id)
    if (state_dim, action_dim) != (dx, du):
        raise ValueError(f"{what} has {state_dim}-dimensional observations and {action_dim}-dimensional actions, "
                         f"but {env_id} has {dx} and {du}: another robot's data, or the wrong --env")


def registered(env_id: str | None) -> bool:
    """Whether gymnasium knows `env_id` (data naming an unregistered robot cannot be checked); a
    robot of gymnasium-robotics counts as known, and fails with how to install it when it cannot run."""
    if env_id is None:
        return False
    env_id = split_env_id(env_id)[0]
    register_robotics(env_id)
    return env_id in gym.registry
