"""Episodes of offline data and the file formats users already have.

An :class:`OfflineDataset` is a list of :class:`Episode` objects, each holding ``T`` transitions
and ``T + 1`` observations (the last one is the state the final action led to), so that windows
of states ``x_0..x_H`` never cross an episode boundary.

Readers: D4RL-style HDF5 (``observations, actions, rewards, terminals, timeouts`` and optionally
``next_observations`` and ``costs``), ``.npz`` with the same keys, and Minari datasets loaded from
local storage (never downloaded).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Data values beyond this magnitude are refused at load (rewards of 1e38 overflowed the reward
# model's loss after the diffusion models had trained); a model file's normalizer has the same bound.
from mpdiffuser.config import NORMALIZER_LIMIT as DATA_LIMIT

REQUIRED_FLAT_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
HDF5_LAYOUTS = ("d4rl", "episodes")  # one row per transition; the authors' one group per episode
# Metadata of data read without next_observations: how many episodes lost their last transition.
DROPPED_LAST_STEPS = "dropped_last_steps"


@dataclass
class Episode:
    """One episode: observations [T+1, dx], actions [T, du], rewards [T], costs [T] or None.

    ``terminated`` is True when the episode ended in a terminal state (the robot fell), False
    when it was cut by a time limit or the data simply ends.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: bool
    costs: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.observations = np.asarray(self.observations, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        self.rewards = np.asarray(self.rewards, dtype=np.float32).reshape(-1)
        if self.costs is not None:
            self.costs = np.asarray(self.costs, dtype=np.float32).reshape(-1)
        steps = len(self.actions)
        if self.observations.ndim != 2 or self.actions.ndim != 2:
            raise ValueError(f"observations and actions must be 2-D, got shapes {self.observations.shape} "
                             f"and {self.actions.shape}")
        if len(self.observations) != steps + 1:
            raise ValueError(f"an episode of {steps} actions needs {steps + 1} observations, "
                             f"got {len(self.observations)}")
        if len(self.rewards) != steps or (self.costs is not None and len(self.costs) != steps):
            raise ValueError(f"rewards/costs must have one entry per action ({steps})")

    @property
    def length(self) -> int:
        return len(self.actions)


@dataclass
class OfflineDataset:
    """Episodes plus metadata (environment id, generation recipe, source)."""

    episodes: list[Episode]
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.episodes:
            raise ValueError("a dataset needs at least one episode")
        dims = {(e.observations.shape[1], e.actions.shape[1]) for e in self.episodes}
        if len(dims) != 1:
            raise ValueError(f"episodes disagree on (state dim, action dim): {sorted(dims)}")
        with_costs = {e.costs is not None for e in self.episodes}
        if len(with_costs) != 1:
            raise ValueError("either every episode has costs or none has")
        name = self.metadata.get("name") or self.metadata.get("source") or "the dataset"
        (dx, du), = dims
        if dx < 1 or du < 1:
            raise ValueError(f"{name}: observations and actions need at least one dimension each, got {dx} and {du}")
        for key in ("observations", "actions", "rewards", "costs"):
            for i, e in enumerate(self.episodes):
                values = getattr(e, key)
                if values is not None and not np.isfinite(values).all():
                    row = int(np.argwhere(~np.isfinite(values))[0][0])
                    raise ValueError(f"{name}: '{key}' holds NaN or infinity (episode {i}, step {row}); "
                                     "clean the data before training")
                # a value beyond the limit is a unit or file fault, and its squares overflow float32 in training
                if values is not None and np.abs(values).max(initial=0.0) > DATA_LIMIT:
                    row = int(np.argwhere(np.abs(values) > DATA_LIMIT)[0][0])
                    raise ValueError(f"{name}: '{key}' holds a value beyond +-{DATA_LIMIT:g} (episode {i}, step {row}); "
                                     "clean the data before training")

    @property
    def state_dim(self) -> int:
        return self.episodes[0].observations.shape[1]

    @property
    def action_dim(self) -> int:
        return self.episodes[0].actions.shape[1]

    @property
    def has_costs(self) -> bool:
        return self.episodes[0].costs is not None

    @property
    def num_transitions(self) -> int:
        return sum(e.length for e in self.episodes)

    @property
    def env_id(self) -> str | None:
        return self.metadata.get("env_id")

    @property
    def stored_metadata(self) -> dict:
        """The metadata a saved copy carries (what describes reading this copy left out: a saved
        copy holds next_observations)."""
        return {k: v for k, v in self.metadata.items() if k != DROPPED_LAST_STEPS}

    def problems(self, action_low: np.ndarray | None = None, action_high: np.ndarray | None = None) -> list[str]:
        """What in the data is probably a mistake, one line each (empty when nothing is): actions
        outside [action_low, action_high] (the environment's action space, when known) and
        observation or action dimensions that never change (nothing to learn; the min-max
        normalizer maps them to 0)."""
        found = []
        obs = np.concatenate([e.observations for e in self.episodes])
        act = np.concatenate([e.actions for e in self.episodes])
        if action_low is not None and action_high is not None:
            outside = (act < action_low - 1e-6) | (act > action_high + 1e-6)
            if outside.any():
                worst = np.abs(act[outside]).max()
                found.append(f"{outside.any(axis=1).sum()} of {len(act)} actions lie outside the environment's action "
                             f"space [{float(np.min(action_low)):g}, {float(np.max(action_high)):g}] (largest "
                             f"magnitude {worst:g}): the robot cannot execute them; were they scaled?")
        dropped = self.metadata.get(DROPPED_LAST_STEPS)
        if dropped:
            found.append(f"the data have no next_observations: the last transition of each of the {dropped} "
                         "episode(s) was dropped (its next state is unknown); store next_observations to keep them")
        if not self.env_id:
            found.append("the data name no robot (no env_id in their metadata): pass --env (fit, inspect: env=...) "
                         "so that the models record which robot they control")
        for name, values in (("observation", obs), ("action", act)):
            constant = np.flatnonzero(values.min(axis=0) == values.max(axis=0))
            if len(constant):
                shown = ", ".join(f"{d} = {values[0, d]:g}" for d in constant[:10])
                more = f" and {len(constant) - 10} more" if len(constant) > 10 else ""
                found.append(f"{len(constant)} {name} dimension(s) never change ({shown}{more}): nothing to learn "
                             "from them")
        return found

    def for_env(self, env_id: str) -> "OfflineDataset":
        """The same episodes with `env_id` as their environment (metadata), for data that name
        none or another spelling of it; the environment must exist and fit the data's dimensions."""
        from mpdiffuser.envs import check_data_fits

        check_data_fits(env_id, self.state_dim, self.action_dim, self.metadata.get("name") or "the data")
        return dataclasses.replace(self, metadata=self.metadata | {"env_id": env_id})

    def check_env(self) -> "OfflineDataset":
        """self, when the robot it names is unknown to gymnasium (nothing to check) or its data fit
        that robot's spaces; ValueError otherwise (one message everywhere: envs.check_data_fits)."""
        from mpdiffuser.envs import registered

        return self.for_env(self.env_id) if registered(self.env_id) else self

    def returns(self) -> np.ndarray:
        """Undiscounted return of every episode, float64 [E]."""
        return np.array([float(e.rewards.sum()) for e in self.episodes])

    def merged(self, other: "OfflineDataset") -> "OfflineDataset":
        """Both datasets' episodes (same dimensions required); metadata of self, sources listed."""
        meta = dict(self.metadata)
        meta["merged_with"] = other.metadata.get("name", "unnamed")
        return OfflineDataset(self.episodes + other.episodes, meta)

    # ---- flat D4RL layout -------------------------------------------------------------------
    def to_flat(self) -> dict[str, np.ndarray]:
        """The D4RL layout: one row per transition, with next_observations."""
        cat = lambda xs: np.concatenate(xs, axis=0)  # noqa: E731
        flat = {
            "observations": cat([e.observations[:-1] for e in self.episodes]),
            "next_observations": cat([e.observations[1:] for e in self.episodes]),
            "actions": cat([e.actions for e in self.episodes]),
            "rewards": cat([e.rewards for e in self.episodes]),
            "terminals": cat([_last_flag(e.length, e.terminated) for e in self.episodes]),
            "timeouts": cat([_last_flag(e.length, not e.terminated) for e in self.episodes]),
        }
        if self.has_costs:
            flat["costs"] = cat([e.costs for e in self.episodes])
        return flat

    @classmethod
    def from_flat(cls, data: dict[str, np.ndarray], metadata: dict | None = None, source: str = "data") -> "OfflineDataset":
        """Split D4RL-style flat arrays into episodes at terminals | timeouts.

        Without ``next_observations`` the final state of an episode is unknown, so each episode's
        last transition is dropped (as D4RL-based planners do).
        """
        for key in REQUIRED_FLAT_KEYS:
            if key not in data:
                raise ValueError(f"{source}: missing required key '{key}' (need {', '.join(REQUIRED_FLAT_KEYS)}"
                                 f"{'; it has ' + ', '.join(sorted(data)) if data else '; it holds no arrays'})")
        obs = np.asarray(data["observations"], dtype=np.float32)
        act = np.asarray(data["actions"], dtype=np.float32)
        if obs.ndim != 2:
            raise ValueError(f"{source}: 'observations' must be [rows, state_dim], got shape {obs.shape}")
        rows = len(obs)
        if rows == 0:
            raise ValueError(f"{source}: the dataset holds no rows")
        if act.ndim != 2 or len(act) != rows:
            raise ValueError(f"{source}: 'actions' must be [{rows}, action_dim], got shape {act.shape}")
        columns = {}
        for key in ("rewards", "terminals", "timeouts", "costs"):
            if key in data:
                column = np.asarray(data[key]).reshape(-1) if np.ndim(data[key]) <= 2 else None
                if column is None or len(column) != rows:
                    raise ValueError(f"{source}: '{key}' must have one entry per row ({rows}), "
                                     f"got shape {np.shape(data[key])}")
                columns[key] = column
        nxt = data.get("next_observations")
        if nxt is not None and np.shape(nxt) != obs.shape:
            raise ValueError(f"{source}: 'next_observations' must match 'observations' {obs.shape}, got {np.shape(nxt)}")
        ends = np.flatnonzero(columns["terminals"].astype(bool) | columns["timeouts"].astype(bool))
        if len(ends) == 0 or ends[-1] != rows - 1:
            ends = np.append(ends, rows - 1)  # the data ends mid-episode: treat as a time limit
        episodes, start = [], 0
        for end in ends:
            stop = end + 1
            terminated = bool(columns["terminals"][end])
            costs = columns.get("costs")
            if nxt is not None:
                ep_obs = np.concatenate([obs[start:stop], np.asarray(nxt[end:end + 1], dtype=np.float32)])
                sl = slice(start, stop)
            else:
                ep_obs = obs[start:stop]
                sl = slice(start, stop - 1)
            if sl.stop - sl.start >= 1:
                episodes.append(Episode(ep_obs, act[sl], columns["rewards"][sl], terminated,
                                        None if costs is None else costs[sl]))
            start = stop
        if not episodes:
            raise ValueError(f"{source}: no episode has a transition (each of the {len(ends)} episode(s) is one row "
                             "long and the file has no next_observations)")
        metadata = dict(metadata or {})
        if nxt is None:  # problems() says so: each episode's last step is gone
            metadata[DROPPED_LAST_STEPS] = len(ends)
        return cls(episodes, metadata)

    # ---- files ---------------------------------------------------------------------------------
    def save_hdf5(self, path: str | Path, layout: str = "d4rl") -> Path:
        """Write the D4RL-style layout ("d4rl": one row per transition) or the MPDiffuser authors'
        ("episodes": a group sample_<i> per episode with observations [T+1, dx], actions, rewards,
        terminations, truncations and costs); metadata goes to the ``mpdiffuser_metadata`` attribute."""
        import h5py

        if layout not in HDF5_LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(HDF5_LAYOUTS)}, got {layout!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with h5py.File(tmp, "w") as f:
            if layout == "d4rl":
                for key, value in self.to_flat().items():
                    f.create_dataset(key, data=value, compression="gzip", compression_opts=1)
            else:
                for i, e in enumerate(self.episodes):
                    group = f.create_group(f"sample_{i}")
                    ended = np.zeros(e.length, bool)
                    ended[-1] = True
                    fields = {"observations": e.observations, "actions": e.actions, "rewards": e.rewards,
                              "terminations": ended & e.terminated, "truncations": ended & (not e.terminated)}
                    if e.costs is not None:
                        fields["costs"] = e.costs
                    for key, value in fields.items():
                        group.create_dataset(key, data=value)
            f.attrs["mpdiffuser_metadata"] = json.dumps(self.stored_metadata)
        tmp.replace(path)  # never leave a half-written dataset under the final name
        return path

    def save_npz(self, path: str | Path) -> Path:
        """The same layout as save_hdf5 in a NumPy .npz (metadata as a JSON string)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **self.to_flat(), mpdiffuser_metadata=np.array(json.dumps(self.stored_metadata)))
        tmp.replace(path)
        return path

    def save_minari(self, dataset_id: str, env_id: str, root: str | Path | None = None) -> None:
        """Write a local Minari dataset (``namespace/name-v0``) with the recipe in its description."""
        import os

        import minari
        from minari.data_collector import EpisodeBuffer

        if root is not None:
            os.environ["MINARI_DATASETS_PATH"] = str(Path(root).resolve())
        buffers = []
        for i, e in enumerate(self.episodes):
            buffers.append(EpisodeBuffer(
                id=i, observations=e.observations, actions=e.actions, rewards=e.rewards,
                terminations=_last_flag(e.length, e.terminated),
                truncations=_last_flag(e.length, not e.terminated),
                infos={"cost": e.costs} if e.costs is not None else {},
            ))
        minari.create_dataset_from_buffers(
            dataset_id=dataset_id, buffer=buffers, env=env_id, algorithm_name=self.metadata.get("recipe", {}).get("policy"),
            description=json.dumps(self.stored_metadata), author="mpdiffuser",
        )


def _last_flag(length: int, value: bool) -> np.ndarray:
    flags = np.zeros(length, dtype=bool)
    flags[-1] = value
    return flags


def merge_datasets(datasets: list[OfflineDataset]) -> OfflineDataset:
    """All episodes of `datasets` (same dimensions) as one dataset with the first one's metadata."""
    if not datasets:
        raise ValueError("no datasets to merge")
    merged = datasets[0]
    for d in datasets[1:]:
        merged = merged.merged(d)
    return merged


def load_hdf5(path: str | Path) -> OfflineDataset:
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            meta = json.loads(f.attrs["mpdiffuser_metadata"]) if "mpdiffuser_metadata" in f.attrs else {}
            if "sample_0" in f:  # the authors' layout: one group per episode
                meta.setdefault("source", str(path))
                return OfflineDataset(_episode_groups(f, path), meta)
            data = {key: f[key][()] for key in f.keys() if isinstance(f[key], h5py.Dataset)}
            nested = []  # datasets inside groups (D4RL's infos/..., metadata/...): not read
            f.visititems(lambda name, item: nested.append(name) if isinstance(item, h5py.Dataset) and "/" in name
                         else None)
    except OSError as exc:  # h5py's message does not name the file
        raise ValueError(f"{path} is not a readable HDF5 file ({exc})") from None
    missing = [k for k in REQUIRED_FLAT_KEYS if k not in data]
    inside = [n for n in nested if n.rsplit("/", 1)[-1] in missing]
    if missing and inside:
        raise ValueError(f"{path}: missing required key '{missing[0]}' at the top level; the file holds "
                         f"{', '.join(inside[:5])} inside groups: mpdiffuser reads the D4RL layout "
                         f"({', '.join(REQUIRED_FLAT_KEYS)} at the top level)")
    meta.setdefault("source", str(path))
    return OfflineDataset.from_flat(data, meta, source=str(path))


def _episode_groups(f, path: Path) -> list[Episode]:
    """The episodes of an authors'-layout file: groups sample_0, sample_1, ... in numeric order,
    each with observations [T+1, dx] (the last next observation included), actions [T, du],
    rewards [T], terminations [T] and optionally costs [T]."""
    names = [n for n in f.keys() if n.startswith("sample_")]
    order = sorted(names, key=lambda n: int(n.split("_", 1)[1]) if n.split("_", 1)[1].isdigit() else -1)
    episodes = []
    for name in order:
        group = f[name]
        missing = [k for k in ("observations", "actions", "rewards", "terminations") if k not in group]
        if missing:
            raise ValueError(f"{path}: episode group '{name}' lacks '{missing[0]}' (the authors' layout holds "
                             "observations, actions, rewards and terminations per episode)")
        obs, act = group["observations"][()], group["actions"][()]
        if len(obs) != len(act) + 1:
            raise ValueError(f"{path}: episode group '{name}' holds {len(obs)} observations for {len(act)} actions; "
                             "the authors' layout stores one more (the last next observation)")
        ends = np.asarray(group["terminations"][()], bool).reshape(-1)
        episodes.append(Episode(obs, act, np.asarray(group["rewards"][()]).reshape(-1), bool(ends.any()),
                                np.asarray(group["costs"][()]).reshape(-1) if "costs" in group else None))
    return episodes


def load_npz(path: str | Path) -> OfflineDataset:
    import zipfile

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {key: f[key] for key in f.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:  # ValueError: not a zip, NumPy guesses a pickle
        raise ValueError(f"{path} is not a readable .npz file ({exc})") from None
    meta = json.loads(str(data.pop("mpdiffuser_metadata"))) if "mpdiffuser_metadata" in data else {}
    meta.setdefault("source", str(path))
    return OfflineDataset.from_flat(data, meta, source=str(path))


def load_minari(dataset_id: str, root: str | Path | None = None) -> OfflineDataset:
    """A Minari dataset from local storage only (``MINARI_DATASETS_PATH`` or ``root``)."""
    import os

    import minari

    if root is not None:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(root).resolve())
    local = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
    try:
        ds = minari.load_dataset(dataset_id, download=False)
    except Exception as exc:  # minari raises several types for a missing local dataset
        # minari's own text ends with "Use download=True", which a command-line user cannot do and
        # this project never does at run time: say what works instead.
        raise FileNotFoundError(
            f"Minari dataset '{dataset_id}' is not in local storage ({local}). Put it there "
            f"(`minari download {dataset_id}` on a machine with internet, then copy the folder), set "
            f"MINARI_DATASETS_PATH to where it is, or make one with `mpdiffuser generate-data --minari-id "
            f"{dataset_id}`") from exc
    episodes = []
    for ep in ds.iterate_episodes():
        if ep.actions is None or np.size(ep.actions) == 0:
            raise KeyError(f"Minari dataset '{dataset_id}': episode {ep.id} has no actions")
        costs = ep.infos.get("cost") if isinstance(ep.infos, dict) else None
        episodes.append(Episode(np.asarray(ep.observations), ep.actions, ep.rewards,
                                bool(np.asarray(ep.terminations)[-1]), costs))
    meta = {}
    description = getattr(ds.spec, "description", None) or ""
    try:
        meta = json.loads(description)
    except (json.JSONDecodeError, TypeError):
        meta = {"description": description}
    meta.setdefault("env_id", getattr(ds.spec.env_spec, "id", None) if ds.spec.env_spec else None)
    meta.setdefault("source", f"minari:{dataset_id}")
    return OfflineDataset(episodes, meta)


def load_dataset(spec: str | Path) -> OfflineDataset:
    """Load ``path.hdf5|.h5``, ``path.npz`` or ``minari:<dataset_id>``; data that name a robot
    gymnasium knows must fit its spaces (OfflineDataset.check_env)."""
    spec = str(spec)
    suffix = Path(spec).suffix.lower()
    if spec.startswith("minari:"):
        data = load_minari(spec[len("minari:"):])
    elif suffix in (".hdf5", ".h5"):
        data = load_hdf5(spec)
    elif suffix == ".npz":
        data = load_npz(spec)
    else:
        raise ValueError(f"unknown dataset '{spec}': expected a .hdf5/.h5 or .npz file, or minari:<dataset_id>")
    return data.check_env()
