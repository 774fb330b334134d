"""Diffuser and Decision Diffuser, the prior diffusion planners the paper compares MPDiffuser with
(design section 6, claim 1). Both train from an MPDiffuser bundle's task data with its normalizers,
return condition, horizon H, steps K, prediction target and network family, and plan with the same
Philox noise, temperature and N, through the same MPCPolicy (first action executed, replanning
every step), so that only the method differs.

Diffuser (Janner et al. 2022, value guidance): a diffusion model over state-action windows
[x_{t+1}, u_t] given x_0 (the planner network, trained with the return condition always dropped,
so it is unconditional in the return) and a value function V(tau^k, x_0, k), trained on windows
noised to every level, that predicts the window's normalized return-to-go (the bundle's return
condition g of its start). At every level k > stop_grad_steps the window first climbs V
guide_steps times, tau <- tau + s sigma_k^2 grad V (s = value_scale, the gradient scaled by the
level's variance as Diffuser does), then takes one denoising step. With N > 1 the candidate of
largest V(tau^0, x_0, 1) is executed. Diffuser inpaints x_0 into the window; here x_0 enters the
network as the planner's does: the same family, one difference fewer.

Decision Diffuser (Ajay et al. 2023): a diffusion model over the states x_1..x_H alone, given x_0
and the return condition with classifier-free guidance (w = options.guidance, g =
options.return_target, as the planner's), and an inverse dynamics model u_t = f(x_t, x_{t+1}); the
plan's actions are f along the sampled states, the first f(x_0, x_1). With N > 1 the candidates
(states with their actions) are ranked by the bundle's reward model, as the authors' DD policy does.

    train_baseline(bundle_dir, "diffuser", task, TrainConfig(steps=5000, seed=0))
    policy = MPCPolicy(DiffuserSampler(bundle_dir, value_scale=0.1))
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mpdiffuser import noise
from mpdiffuser.config import SamplerOptions, TrainConfig
from mpdiffuser.data.dataset import OfflineDataset
from mpdiffuser.data.windows import WindowSampler
from mpdiffuser.models.bundle import ModelBundle
from mpdiffuser.models.networks import EMBED_DIM, ResidualMLP, step_embedding
from mpdiffuser.models.registry import family
from mpdiffuser.sampling.reference import (Plan, ReferenceSampler, check_options_type, check_plan_finite,
                                           select_candidate)
from mpdiffuser.training.loop import NothingToDo, final_loss, initialized, train_loop
from mpdiffuser.training.losses import DiffusionLoss, PlannerLoss

# baseline -> its networks, each trained on its own (their files: <bundle>/baselines/<network>.pt)
NETWORKS = {"diffuser": ("diffuser-denoiser", "diffuser-value"),
            "decision-diffuser": ("dd-denoiser", "dd-inverse-dynamics")}
BASELINES = tuple(NETWORKS)


class ValueFunction(nn.Module):
    """V(tau^k, x_0, k): [B, H, D], [B, dx], [B] -> [B], the window's predicted normalized return."""

    def __init__(self, state_dim: int, action_dim: int, horizon: int, width: int, layers: int):
        super().__init__()
        self.mlp = ResidualMLP(horizon * (state_dim + action_dim) + state_dim + EMBED_DIM, width, layers, 1)

    def forward(self, tau: torch.Tensor, x0: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([tau.flatten(1), x0, step_embedding(k)], dim=1))[:, 0]


class InverseDynamics(nn.Module):
    """u_t = tanh(f(x_t, x_{t+1})): [..., dx], [..., dx] -> [..., du], normalized units."""

    def __init__(self, state_dim: int, action_dim: int, width: int, layers: int):
        super().__init__()
        self.mlp = ResidualMLP(2 * state_dim, width, layers, action_dim)

    def forward(self, x: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        out = torch.tanh(self.mlp(torch.cat([x, x_next], dim=-1).reshape(-1, 2 * x.shape[-1])))
        return out.reshape(*lead, -1)


def build(network: str, spec) -> nn.Module:
    """A fresh network of a baseline for the bundle `spec` (BundleSpec)."""
    m, dx, du, c = spec.model, spec.state_dim, spec.action_dim, spec.conditions.dim
    if network == "diffuser-denoiser":
        return family(m.architecture).planner(dx, du, c, m)
    if network == "diffuser-value":
        return ValueFunction(dx, du, m.horizon, m.width, m.layers)
    if network == "dd-denoiser":  # the planner's family over a window of states alone
        return family(m.architecture).planner(dx, 0, c, m)
    if network == "dd-inverse-dynamics":
        return InverseDynamics(dx, du, m.ranker_width * 2, m.ranker_layers + 1)
    raise ValueError(f"unknown baseline network {network!r}, expected one of "
                     f"{', '.join(n for names in NETWORKS.values() for n in names)}")


# ---- losses: each (model, window batch {x0, states, actions, cond}, generator) -> loss ----------
class ValueLoss(DiffusionLoss):
    """V on windows noised to a uniform level k regresses the window's return condition g."""

    def __call__(self, model, batch: dict, gen: torch.Generator) -> torch.Tensor:
        tau = torch.cat([batch["states"], batch["actions"]], dim=-1)
        k = self.levels(tau.shape[0], gen)
        tau_k, _ = self.noised(tau, k, gen)
        return F.mse_loss(model(tau_k, batch["x0"], k).float(), batch["cond"][:, 0])


class StatesLoss(DiffusionLoss):
    """Decision Diffuser's: the states window alone, noised and denoised given x_0 and the
    (dropped with the bundle's probability) return condition."""

    def __call__(self, model, batch: dict, gen: torch.Generator) -> torch.Tensor:
        states = batch["states"]
        k = self.levels(states.shape[0], gen)
        states_k, eps = self.noised(states, k, gen)
        out = model(states_k, batch["x0"], self.dropped(batch["cond"], gen), k).float()
        return F.mse_loss(out, self.target(states, eps))


def inverse_dynamics_loss(model, batch: dict, gen: torch.Generator) -> torch.Tensor:
    """u_0 from (x_0, x_1), the first row of every window: always a real transition (later rows of
    a window that ran past a fall are padding)."""
    return F.mse_loss(model(batch["x0"], batch["states"][:, 0]).float(), batch["actions"][:, 0])


def _loss(network: str, spec, config: TrainConfig):
    m = spec.model
    if network == "diffuser-denoiser":  # the return condition always dropped: unconditional in g
        return PlannerLoss(m.num_steps, 1.0, config.action_weight, m.prediction)
    if network == "diffuser-value":
        return ValueLoss(m.num_steps, 0.0, m.prediction)
    if network == "dd-denoiser":
        return StatesLoss(m.num_steps, m.condition_dropout, m.prediction)
    return inverse_dynamics_loss


def weights_path(bundle_dir: str | Path, network: str) -> Path:
    return Path(bundle_dir) / "baselines" / f"{network}.pt"


def check_baseline(name: str) -> str:
    if name not in NETWORKS:
        raise ValueError(f"unknown diffusion baseline {name!r}: choose from {', '.join(BASELINES)}")
    return name


def train_baseline(bundle_dir: str | Path, name: str, task: OfflineDataset, config: TrainConfig,
                   progress: bool = True, device: str = "cpu") -> dict:
    """Train the networks of baseline `name` ("diffuser" or "decision-diffuser") on `task` (the
    data the bundle's planner trained on) with the bundle's spec, each config.steps steps; written
    to <bundle_dir>/baselines/, resumable from <bundle_dir>/checkpoints/. A network already
    trained with the same steps and seed is not trained again. Returns {network: summary}."""
    from mpdiffuser.models.bundle import BundleSpec
    from mpdiffuser.training.runtime import TrainRuntime

    check_baseline(name)
    spec = BundleSpec.load(bundle_dir)
    if (task.state_dim, task.action_dim) != (spec.state_dim, spec.action_dim):
        raise ValueError(f"the task data's dims ({task.state_dim}, {task.action_dim}) differ from the bundle's "
                         f"({spec.state_dim}, {spec.action_dim})")
    m = spec.model
    windows = WindowSampler(task, spec.states, spec.actions, m.horizon, spec.conditions)
    summaries = {}
    for i, network in enumerate(NETWORKS[name]):
        path = weights_path(bundle_dir, network)
        data = {"network": network, "data": [task.metadata.get("name"), task.num_transitions]}
        key = data | {"steps": config.steps, "seed": config.seed}
        if path.exists() and torch.load(path, map_location="cpu", weights_only=True).get("key") == key:
            summaries[network] = {"steps": config.steps, "nothing_to_do": True}
            continue
        model = initialized(lambda network=network: build(network, spec), 1000 + 16 * config.seed + i)
        checkpoint = Path(bundle_dir) / "checkpoints" / f"{network}.train.ckpt"
        started = time.perf_counter()
        try:
            ema, history = train_loop(model, _loss(network, spec, config), windows.sample, config, checkpoint,
                                      desc=f"{network:8s}", progress=progress, identity=data,
                                      runtime=TrainRuntime(device=device))
        except NothingToDo as done:  # stopped between its last checkpoint and its weights file
            model.load_state_dict(done.state["ema"])
            ema, history = model, done.state["history"].tolist()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".pt.tmp")
        torch.save({"state_dict": ema.state_dict(), "key": key, "final_loss": final_loss(history)}, tmp)
        tmp.replace(path)
        summaries[network] = {"steps": config.steps, "final_loss": final_loss(history),
                              "seconds": time.perf_counter() - started}
    return summaries


def load_network(bundle_dir: str | Path, network: str, spec) -> nn.Module:
    path = weights_path(bundle_dir, network)
    if not path.exists():
        raise FileNotFoundError(f"baseline network '{network}' has not been trained: {path} is missing "
                                "(train_baseline trains it)")
    module = build(network, spec)
    module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
    return module.eval()


class _BaselineSampler:
    """What both baselines share with the reference sampler: the bundle's spec and stored
    options, the schedule's posterior mean and sigma, state checks, Philox draws."""

    def __init__(self, bundle_dir: str | Path, env_id: str | None = None):
        self.reference = ReferenceSampler(ModelBundle.load(bundle_dir, env_id))
        self.spec = self.reference.spec
        self.defaults = self.reference.defaults
        self.dx, self.du = self.spec.state_dim, self.spec.action_dim
        self.horizon, self.num_steps = self.spec.model.horizon, self.spec.model.num_steps

    def _start(self, state: np.ndarray, seed: int, options: SamplerOptions | None, width: int):
        """Checked options, x_0 rows [N, dx], the draw function z(step) -> [N, H, width] and sqrt(tau)."""
        options = check_options_type(options) or self.defaults
        options.check_for(self.num_steps, self.horizon)
        if options.fast_numerics:
            raise ValueError("fast_numerics: the Diffuser and Decision Diffuser baselines plan in the exact "
                             "numeric mode only (fast_numerics=0)")
        x0 = self.spec.states.normalize(self.reference.check_state(state))
        n = options.num_candidates
        candidates = np.arange(n)
        x0_rows = torch.from_numpy(np.asarray(x0, np.float32)).expand(n, self.dx)

        def z(step: int) -> torch.Tensor:
            return torch.from_numpy(noise.normal_blocks(seed, candidates, step, self.horizon * width)).view(
                n, self.horizon, width)

        scale = float(np.float32(np.sqrt(np.float32(options.temperature))))
        return options, x0, x0_rows, z, scale

    def _plan(self, tau: torch.Tensor, values: np.ndarray, costs, options: SamplerOptions, seed: int) -> Plan:
        index = select_candidate(values, costs, options.cost_budget)
        windows = tau.numpy()
        actions = self.spec.actions.unnormalize(windows[index, : options.actions_per_plan, self.dx:])
        check_plan_finite(values, windows[index], actions, seed)
        return Plan(actions, index, values, costs, windows[index], windows)


class DiffuserSampler(_BaselineSampler):
    """Diffuser with value guidance; `plan(state, seed, options) -> Plan` like every sampler.
    options: N, temperature, actions per plan (the return target and guidance w do not apply)."""

    def __init__(self, bundle_dir: str | Path, value_scale: float = 0.1, guide_steps: int = 2,
                 stop_grad_steps: int = 2, env_id: str | None = None):
        if not np.isfinite(value_scale) or value_scale < 0:
            raise ValueError(f"value_scale must be a finite number >= 0, got {value_scale}")
        if guide_steps < 0 or stop_grad_steps < 0:
            raise ValueError(f"guide_steps and stop_grad_steps must be >= 0, got {guide_steps}, {stop_grad_steps}")
        super().__init__(bundle_dir, env_id)
        self.denoiser = load_network(bundle_dir, "diffuser-denoiser", self.spec)
        self.value = load_network(bundle_dir, "diffuser-value", self.spec)
        self.value_scale, self.guide_steps, self.stop_grad_steps = float(value_scale), guide_steps, stop_grad_steps

    def value_guided(self, tau: torch.Tensor, x0_rows: torch.Tensor, k: int) -> torch.Tensor:
        """tau climbed guide_steps times along s sigma_k^2 grad V at level k (unchanged at k <= stop_grad_steps)."""
        if self.value_scale == 0.0 or k <= self.stop_grad_steps:
            return tau
        kk = torch.full((tau.shape[0],), k, dtype=torch.long)
        step = self.value_scale * float(self.reference.posterior_sigma(k)) ** 2
        for _ in range(self.guide_steps):
            with torch.enable_grad():
                leaf = tau.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(self.value(leaf, x0_rows, kk).sum(), leaf)
            tau = tau + step * grad
        return tau

    @torch.no_grad()
    def plan(self, state: np.ndarray, seed: int, options: SamplerOptions | None = None) -> Plan:
        options, _, x0_rows, z, scale = self._start(state, seed, options, self.dx + self.du)
        n, cond = x0_rows.shape[0], torch.zeros(x0_rows.shape[0], self.spec.conditions.dim)
        tau = scale * z(self.num_steps + 1)
        for k in range(self.num_steps, 0, -1):
            tau = self.value_guided(tau, x0_rows, k)
            kk = torch.full((n,), k, dtype=torch.long)
            tau = self.reference.posterior_mean(tau, self.denoiser(tau, x0_rows, cond, kk), k)
            if k > 1:
                tau = tau + self.reference.posterior_sigma(k) * (scale * z(k))
        values = self.value(tau, x0_rows, torch.ones(n, dtype=torch.long)).numpy()
        return self._plan(tau, values, None, options, seed)


class DecisionDiffuserSampler(_BaselineSampler):
    """Decision Diffuser; `plan(state, seed, options) -> Plan` like every sampler. options: N,
    temperature, guidance w and return target g (the condition), actions per plan."""

    def __init__(self, bundle_dir: str | Path, env_id: str | None = None):
        super().__init__(bundle_dir, env_id)
        self.denoiser = load_network(bundle_dir, "dd-denoiser", self.spec)
        self.inverse = load_network(bundle_dir, "dd-inverse-dynamics", self.spec)

    @torch.no_grad()
    def plan(self, state: np.ndarray, seed: int, options: SamplerOptions | None = None) -> Plan:
        options, x0, x0_rows, z, scale = self._start(state, seed, options, self.dx)
        n = x0_rows.shape[0]
        cond = torch.from_numpy(self.reference.condition(options)).expand(n, -1)
        zero = torch.zeros_like(cond)
        states = scale * z(self.num_steps + 1)
        for k in range(self.num_steps, 0, -1):
            kk = torch.full((n,), k, dtype=torch.long)
            out = self.reference.guided(self.denoiser, (states, x0_rows, cond, kk), (states, x0_rows, zero, kk),
                                         float(options.guidance))
            states = self.reference.posterior_mean(states, out, k)
            if k > 1:
                states = states + self.reference.posterior_sigma(k) * (scale * z(k))
        previous = torch.cat([x0_rows[:, None], states[:, :-1]], dim=1)  # x_0..x_{H-1}
        tau = torch.cat([states, self.inverse(previous, states)], dim=-1)  # rows [x_{t+1}, u_t]
        if n == 1:
            return self._plan(tau, np.zeros(1, np.float32), None, options, seed)
        values, costs = self.reference.rank(x0, tau, options.discount)
        return self._plan(tau, values, costs, options, seed)


def baseline_sampler(name: str, bundle_dir: str | Path, env_id: str | None = None, value_scale: float | None = None):
    """The sampler of baseline `name` over a bundle whose baseline networks are trained."""
    if check_baseline(name) == "diffuser":
        return DiffuserSampler(bundle_dir, env_id=env_id, **({} if value_scale is None else
                                                                {"value_scale": value_scale}))
    if value_scale is not None:
        raise ValueError("value_scale is Diffuser's; Decision Diffuser is guided by the return target")
    return DecisionDiffuserSampler(bundle_dir, env_id=env_id)
