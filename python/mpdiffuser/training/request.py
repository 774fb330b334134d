"""One training request: everything `mpdiffuser train` and `mpd.fit` take, checked once, run once.

A TrainRequest names the bundle, the data, the recipe and which models train how; `settings`
holds the training config's, the new bundle's model's and the runtime's fields by their flag
names (steps, lr, horizon, precision, ...: TRAIN_FLAGS, MODEL_FLAGS, RUNTIME_FLAGS). The command
line builds it from flags generated from this dataclass and those tables; `mpd.fit` from keyword
arguments of the same names; `run()` takes the bundle's lock, prepares it and trains it
(training.bundles.train_bundle), alone or as one rank of a torchrun launch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from mpdiffuser.config import AT_ONCE_MODES, MODEL_FLAGS, TRAIN_FLAGS, ModelConfig

# The flags that set a TrainRuntime field (flag -> field): their help is the field's comment in
# training/runtime.py, their default the dataclass's. device has the request's own field.
RUNTIME_FLAGS = {"precision": "precision", "batches": "batches", "capture": "capture", "log_every": "log_every",
                 "compile": "compile", "tensorboard": "tensorboard"}
SETTINGS = {**TRAIN_FLAGS, **MODEL_FLAGS, **RUNTIME_FLAGS}  # every setting by its flag name -> its field


@dataclass(frozen=True)
class TrainRequest:
    bundle: str  # model bundle directory (created if missing)
    data: tuple[str, ...] = ()  # task dataset(s): files (.hdf5, .npz, minari:<id>) or OfflineDatasets
    extra_data: tuple[str, ...] = ()  # more data for the dynamics and ranker models only (random actions, say)
    env: str | None = None  # environment id recorded in the bundle (default: the one the data name, if any)
    recipe: str = "default"  # training, model and sampler defaults: "default" (ours) or "authors" (the paper code's)
    model: str = "all"  # which model(s) to train: all, or one of the bundle's
    fine_tune: bool = False  # start from the bundle's existing weights
    seeds: tuple[int, ...] = ()  # several training seeds, one bundle each (BUNDLE-s<seed>), trained at once on a GPU
    export_at: tuple[int, ...] = ()  # also export BUNDLE/model-<n>.safetensors at each of these steps (<= steps)
    force: bool = False  # start over: the models' checkpoints (with model all, the bundle's settings too)
    device: str = "auto"  # auto (a GPU when torch sees one), cpu, cuda or cuda:<i>
    at_once: str = AT_ONCE_MODES[0]  # train the models side by side, a thread and a CUDA stream each (auto: on a GPU)
    # every this many planner steps, control the bundle's robot with the planner as it is (the
    # other models train first) and log the return and score beside the loss (0: never)
    eval_every: int = 0
    eval_episodes: int = 3  # episodes of each of those evaluations
    settings: dict = field(default_factory=dict)  # training, model and runtime fields by their flag names
    # training settings of single models, by model name then flag name ({"reward": {"steps": 3000}};
    # the command line's --per-model reward.steps=3000); a model's other settings are the request's
    per_model: dict = field(default_factory=dict)
    # the new bundle's spec (Python only: a BundleSpec with normalizers fitted on other data, say) in
    # place of the recipe's fit on data and extra data; an existing bundle must equal it
    spec: object = None

    def __post_init__(self) -> None:
        from mpdiffuser.models.bundle import MODEL_NAMES
        from mpdiffuser.recipes import RECIPES

        unknown = sorted(set(self.settings) - set(SETTINGS))
        if unknown:
            raise TypeError(f"unknown training settings {unknown}; the settings are {', '.join(SETTINGS)}")
        if not self.data:
            raise ValueError("a training request needs data")
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        if self.model != "all" and self.model not in MODEL_NAMES:
            raise ValueError(f"model must be all or one of {', '.join(MODEL_NAMES)}, got {self.model!r}")
        if self.at_once not in AT_ONCE_MODES:
            raise ValueError(f"at_once must be one of {', '.join(AT_ONCE_MODES)}, got {self.at_once!r}")
        for name in ("fine_tune", "force"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        config = self.train_config  # bad values fail here, before any file is written
        self.configs  # noqa: B018 - so do a single model's
        ModelConfig(**self.model_config)  # so do bad model sizes (horizon 0)
        self.runtime_fields  # noqa: B018 - checked by TrainRuntime when run() makes it
        snapshots = sorted(set(self.export_at))
        if snapshots and (self.model != "all" or self.fine_tune):
            raise ValueError("export_at exports whole bundles: it needs model all and no fine_tune")
        diffusion_steps = min(self.config_of(name).steps for name in ("planner", "dynamics"))
        if snapshots and not 1 <= snapshots[0] <= snapshots[-1] <= diffusion_steps:
            raise ValueError(f"export_at must lie within 1..{diffusion_steps} (steps of planner and dynamics), "
                             f"got {snapshots}")
        for name in ("eval_every", "eval_episodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "eval_every" else 1):
                raise ValueError(f"{name} must be an integer >= {0 if name == 'eval_every' else 1}, got {value!r}")
        if self.eval_every and (self.model not in ("all", "planner") or self.export_at):
            raise ValueError("eval_every evaluates the planner as it trains: model all or planner, without export_at")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeats {sorted(s for s in set(self.seeds) if self.seeds.count(s) > 1)}")
        if self.seeds and "seed" in self.settings:
            raise ValueError("give seed or seeds, not both")
        if self.seeds and snapshots:
            raise ValueError("seeds trains one process's bundles side by side: not with export_at")
        if self.spec is not None and self.model_sizes:
            raise ValueError(f"a spec brings its model: give the spec or model settings "
                             f"({', '.join(sorted(self._fields({k: k for k in MODEL_FLAGS})))}), not both")

    @property
    def train_config(self):
        from mpdiffuser.recipes import recipe

        return dataclasses.replace(recipe(self.recipe).train, **self._fields(TRAIN_FLAGS))

    @property
    def configs(self) -> dict:
        """The TrainConfig of each model that per_model changes (the others train with train_config)."""
        from mpdiffuser.models.bundle import MODEL_NAMES

        if not isinstance(self.per_model, dict):
            raise TypeError(f"per_model must be a dict of model name -> settings, got {self.per_model!r}")
        unknown = sorted(set(self.per_model) - set(MODEL_NAMES))
        if unknown:
            raise ValueError(f"per_model names no model {unknown}; the models are {', '.join(MODEL_NAMES)}")
        out = {}
        for name, changes in self.per_model.items():
            if not isinstance(changes, dict):
                raise TypeError(f"per_model[{name!r}] must be a dict of training settings, got {changes!r}")
            bad = sorted(set(changes) - set(TRAIN_FLAGS))
            if bad:
                raise TypeError(f"per_model[{name!r}] has unknown training settings {bad}; they are "
                                f"{', '.join(TRAIN_FLAGS)}")
            if "seed" in changes:
                raise ValueError("per_model cannot set a seed: every model of a bundle trains with its seed")
            out[name] = dataclasses.replace(self.train_config, **{TRAIN_FLAGS[k]: v for k, v in changes.items()})
        return out

    def config_of(self, name: str):
        """The TrainConfig model `name` trains with."""
        return self.configs.get(name, self.train_config)

    @property
    def model_sizes(self) -> dict:
        """The ModelConfig fields given (a new bundle's model; an existing one is checked against them)."""
        return self._fields(MODEL_FLAGS)

    @property
    def model_config(self) -> dict:
        from mpdiffuser.recipes import recipe

        return dict(recipe(self.recipe).model) | self.model_sizes

    @property
    def runtime_fields(self) -> dict:
        return self._fields(RUNTIME_FLAGS)

    def _fields(self, flags: dict) -> dict:
        return {flags[k]: tuple(v) if isinstance(v, list) else v for k, v in self.settings.items() if k in flags}

    def datasets(self) -> tuple[list, list]:
        """(task, extra) datasets, loaded, with the request's env recorded in them when given."""
        from mpdiffuser.data.dataset import OfflineDataset, load_dataset

        def load(items) -> list:
            items = items if isinstance(items, (list, tuple)) else [items]
            return [d if isinstance(d, OfflineDataset) else load_dataset(d) for d in items]

        task, extra = load(self.data), load(self.extra_data)
        if self.env is not None:  # recorded in the bundle and its model files, for eval, tune and consistency
            task, extra = [d.for_env(self.env) for d in task], [d.for_env(self.env) for d in extra]
        return task, extra

    def run(self, progress: bool = True, say=print, strict_batch: bool = False) -> list:
        """Take the bundles' locks, prepare each bundle, train its models; returns train_bundle's
        (bundle, model, config, summary) rows. say: where its lines go (rank 0 only)."""
        from mpdiffuser.envs import action_bounds
        from mpdiffuser.training.bundles import prepare_bundle, train_bundle
        from mpdiffuser.training.lock import BundleLock, BundleLocked
        from mpdiffuser.training.runtime import all_gather, barrier, from_environment, leave_process_group

        runtime = from_environment(self.device, **self.runtime_fields)
        config = self.train_config
        runtime.local_batch(config.batch_size)  # a world size that does not divide the batch fails here
        if self.seeds and runtime.distributed:
            raise ValueError("seeds trains one process's bundles side by side: not under torchrun")
        say = say if runtime.is_main else (lambda *a, **k: None)
        task, extra = self.datasets()
        for data in task + extra:
            for problem in data.problems(*action_bounds(data.env_id)):
                name = data.metadata.get("name") or data.metadata.get("source") or "data"
                say(f"warning: {name}: {problem}")
        bundles = [Path(f"{self.bundle}-s{s}") for s in self.seeds] or [Path(self.bundle)]
        locks = [BundleLock(b, say) for b in bundles]
        refused = None
        if runtime.is_main:
            try:
                for lock in locks:
                    lock.acquire()
            except BundleLocked as exc:
                refused = str(exc)
        refused = all_gather(runtime, refused)[0]  # every rank stops when rank 0 could not take the lock
        try:
            if refused:
                raise BundleLocked(refused)
            fresh = []
            for bundle in bundles:
                if prepare_bundle(bundle, task, extra, self.recipe, self.model_sizes,
                                  force=self.force and self.model == "all" and not self.fine_tune,
                                  create=runtime.is_main, say=say, spec=self.spec):
                    fresh.append(bundle)
                barrier(runtime)  # the other ranks read the bundle rank 0 wrote
            if runtime.distributed or runtime.device != "cpu" or runtime.precision != "fp32":
                say(f"training on {runtime.device} x {runtime.world_size} process(es), {runtime.precision}"
                    + (", compiled" if runtime.compile else ""))
            return train_bundle(self.bundle, task, extra, config=config, configs=self.configs,
                                models=None if self.model == "all" else [self.model], seeds=list(self.seeds),
                                snapshots=sorted(set(self.export_at)), runtime=runtime, at_once=self.at_once,
                                force=True if self.force else fresh, fine_tune=self.fine_tune,
                                strict_batch=strict_batch, progress=progress, say=say, eval_every=self.eval_every,
                                eval_episodes=self.eval_episodes)
        finally:
            for lock in locks:
                lock.release()
            if runtime.distributed:
                leave_process_group()

    @classmethod
    def of(cls, bundle, data, **fields) -> "TrainRequest":
        """A request from keyword arguments named as the command line's flags: the request's own
        fields, and every training, model and runtime setting (TypeError for an unknown name)."""
        own = {f.name for f in dataclasses.fields(cls)} - {"bundle", "data", "settings"}
        unknown = sorted(set(fields) - own - set(SETTINGS))
        if unknown:
            raise TypeError(f"unknown training fields {unknown}; the fields are "
                            f"{', '.join(sorted(own))} and the settings {', '.join(SETTINGS)}")
        plain = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        return cls(bundle=str(bundle), data=tuple(data) if isinstance(data, (list, tuple)) else (data,),
                   **{k: v for k, v in plain.items() if k in own},
                   settings={k: v for k, v in plain.items() if k in SETTINGS})
