"""A model bundle: the directory holding one MPDiffuser's models and what they share.

    <dir>/bundle.json      environment, dimensions, normalizers, condition scale, ModelConfig
    <dir>/planner.pt       EMA weights of each trained model, one file per model, so that the
    <dir>/dynamics.pt      dynamics model alone can be re-trained or fine-tuned while the planner
    <dir>/reward.pt        and ranker files stay byte-identical
    <dir>/cost.pt          (constrained tasks only)
    <dir>/checkpoints/     resumable training state per model
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from mpdiffuser.config import MODEL_NAMES, ModelConfig, SamplerOptions  # noqa: F401  (models.bundle.MODEL_NAMES)
from mpdiffuser.data.dataset import OfflineDataset
from mpdiffuser.data.normalizer import CdfNormalizer, MinMaxNormalizer, fit_normalizer, normalizer_from_dict
from mpdiffuser.data.windows import ConditionScale
from mpdiffuser.models.networks import DynamicsDenoiser, PlannerDenoiser, StepModel
from mpdiffuser.models.registry import family

BUNDLE_FORMAT = 1


@dataclass(frozen=True)
class BundleSpec:
    """What every model of a bundle shares; written once when the bundle is created."""

    env_id: str | None
    state_dim: int
    action_dim: int
    model: ModelConfig
    states: MinMaxNormalizer | CdfNormalizer
    actions: MinMaxNormalizer | CdfNormalizer
    conditions: ConditionScale
    reward_has_termination: bool
    sampler_defaults: SamplerOptions | None = None  # what export stores (None: SamplerOptions())
    # State dimensions every plan keeps at x_0's value: a goal-conditioned robot's desired goal
    # (envs.goal_dims), () for the others; the model file stores them (fixed_state_dims).
    fixed_state_dims: tuple[int, ...] = ()

    @classmethod
    def fit(cls, planner_data: OfflineDataset, all_data: list[OfflineDataset],
            model: ModelConfig | None = None, sampler_defaults: SamplerOptions | None = None) -> "BundleSpec":
        """Normalizers over all data (the dynamics model sees all of it), conditions from the planner's
        data; `model` defaults to ModelConfig.sized_for the data's state and action sizes."""
        import numpy as np

        planner_data.check_env()  # data naming a known robot must be its data
        model = model or ModelConfig.sized_for(planner_data.state_dim, planner_data.action_dim)

        for d in all_data:
            if (d.state_dim, d.action_dim) != (planner_data.state_dim, planner_data.action_dim):
                raise ValueError(f"dataset {d.metadata.get('name', '?')} has dims ({d.state_dim}, {d.action_dim}), "
                                 f"expected ({planner_data.state_dim}, {planner_data.action_dim})")
            if planner_data.env_id and d.env_id and d.env_id != planner_data.env_id:
                raise ValueError(f"datasets of different environments: {planner_data.env_id} and {d.env_id}")
        obs = np.concatenate([e.observations for d in all_data for e in d.episodes])
        act = np.concatenate([e.actions for d in all_data for e in d.episodes])
        terminal = any(e.terminated for d in all_data for e in d.episodes)
        from mpdiffuser.envs import goal_dims

        return cls(planner_data.env_id, planner_data.state_dim, planner_data.action_dim, model,
                   fit_normalizer(model.normalizer, obs), fit_normalizer(model.normalizer, act),
                   ConditionScale.fit(planner_data, model.return_discount, model.cost_scale, model.return_condition),
                   terminal, sampler_defaults, goal_dims(planner_data.env_id))

    @property
    def with_cost(self) -> bool:
        return self.conditions.with_cost

    @property
    def model_names(self) -> list[str]:
        """The models this bundle has, in MODEL_NAMES's order (cost only for data with costs)."""
        return [name for name in MODEL_NAMES if name != "cost" or self.with_cost]

    def build(self, name: str) -> torch.nn.Module:
        """A freshly initialized model `name` of this bundle's architecture."""
        m, dx, du, c = self.model, self.state_dim, self.action_dim, self.conditions.dim
        if name == "planner":
            return family(m.architecture).planner(dx, du, c, m)
        if name == "dynamics":
            return family(m.architecture).dynamics(dx, du, c, m)
        if name == "reward":
            return StepModel(dx, du, m.ranker_width, m.ranker_layers, 2 if self.reward_has_termination else 1)
        if name == "cost":
            if not self.with_cost:
                raise ValueError("this bundle has no cost model: its planner data carries no costs")
            return StepModel(dx, du, m.ranker_width, m.ranker_layers, 1)
        raise ValueError(f"unknown model '{name}', expected one of {', '.join(MODEL_NAMES)}")

    def to_dict(self) -> dict:
        return {
            "format": BUNDLE_FORMAT, "env_id": self.env_id, "state_dim": self.state_dim, "action_dim": self.action_dim,
            "model": dataclasses.asdict(self.model), "states": self.states.to_dict(), "actions": self.actions.to_dict(),
            "conditions": self.conditions.to_dict(), "reward_has_termination": self.reward_has_termination,
            "sampler_defaults": None if self.sampler_defaults is None else dataclasses.asdict(self.sampler_defaults),
            "fixed_state_dims": list(self.fixed_state_dims),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "BundleSpec":
        if d.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"bundle format {d.get('format')} is not supported (expected {BUNDLE_FORMAT})")
        return cls(d["env_id"], d["state_dim"], d["action_dim"], ModelConfig.from_dict(d["model"]),
                   normalizer_from_dict(d["states"]), normalizer_from_dict(d["actions"]),
                   ConditionScale.from_dict(d["conditions"]), d["reward_has_termination"],
                   None if d.get("sampler_defaults") is None else SamplerOptions(**d["sampler_defaults"]),
                   tuple(d.get("fixed_state_dims", ())))  # bundles before the field: none

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "bundle.json").write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> "BundleSpec":
        path = Path(directory) / "bundle.json"
        if not path.exists():
            raise FileNotFoundError(f"no model bundle at {directory} (missing bundle.json)")
        return cls.from_dict(json.loads(path.read_text()))


@dataclass
class ModelBundle:
    """The loaded models of a bundle, in eval mode; cost is None for unconstrained tasks."""

    spec: BundleSpec
    planner: PlannerDenoiser
    dynamics: DynamicsDenoiser
    reward: StepModel
    cost: StepModel | None

    @classmethod
    def load(cls, directory: str | Path, env_id: str | None = None) -> "ModelBundle":
        """Load every trained model; `env_id`, when given, must match the bundle's environment."""
        directory = Path(directory)
        spec = BundleSpec.load(directory)
        if env_id is not None and spec.env_id is not None and env_id != spec.env_id:
            raise ValueError(f"the models in {directory} were trained for {spec.env_id}, not {env_id}")
        models = {name: load_weights(directory, name, spec) for name in spec.model_names}
        return cls(spec, models["planner"], models["dynamics"], models["reward"], models.get("cost"))

    @classmethod
    def from_modules(cls, spec: BundleSpec, **modules) -> "ModelBundle":
        for m in modules.values():
            if m is not None:
                m.eval()
        return cls(spec, modules["planner"], modules["dynamics"], modules["reward"], modules.get("cost"))


def save_weights(directory: str | Path, name: str, module: torch.nn.Module, spec: BundleSpec, info: dict) -> Path:
    """Write `<dir>/<name>.pt` atomically: the state dict plus what it was trained for."""
    path = Path(directory) / f"{name}.pt"
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"state_dict": module.state_dict(), "env_id": spec.env_id,
                "dims": [spec.state_dim, spec.action_dim], "info": info}, tmp)
    tmp.replace(path)
    return path


def load_weights(directory: str | Path, name: str, spec: BundleSpec) -> torch.nn.Module:
    path = Path(directory) / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(f"model '{name}' has not been trained: {path} is missing")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("env_id") != spec.env_id or list(blob.get("dims", [])) != [spec.state_dim, spec.action_dim]:
        raise ValueError(f"{path} was trained for {blob.get('env_id')} with dims {blob.get('dims')}, but the bundle "
                         f"is {spec.env_id} with dims [{spec.state_dim}, {spec.action_dim}]")
    module = spec.build(name)
    try:
        module.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{path} does not match the bundle's architecture: {exc}") from exc
    return module.eval()
