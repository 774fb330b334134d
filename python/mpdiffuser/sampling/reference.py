"""The MPDiffuser alternating sampler in plain PyTorch: the executable specification of design
section 3, batched over candidates, with the Philox noise of section 3.1.

The window starts as sqrt(temperature) z (or, warm-started, as the previous plan's window shifted
and re-noised to level k_w). For k = K (or k_w) .. 1: a dynamics update denoises the window's states
given x_0 and the window's actions (X' = (1 - lambda) X + lambda mu_k(X, o_phi)), then a planner
update denoises the corrected window one step (tau^{k-1} = mu_k(tau', o_theta) + sqrt(temperature)
sigma_k z). The networks' outputs o are noise or clean-sample predictions (the model's
`prediction`). Finally the ranker scores every candidate and the best (feasible) one is chosen.

Numeric modes (option fast_numerics): 0, exact, is float32 throughout; 1, fast, rounds the input of
every weight layer (linear, convolution, transposed convolution) of every network to bfloat16
(nearest even) before its products, which a model file with bfloat16 weights makes exact products
of two bfloat16 numbers summed in float32: the arithmetic of AMX tiles and tensor cores. Everything
else (biases, normalization, the updates, the noise) stays float32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from mpdiffuser import noise
from mpdiffuser.config import MIN_HALF_RANGE, STATE_RANGE_LIMIT, TERMINATION_PENALTY, SamplerOptions
from mpdiffuser.models.bundle import MODEL_NAMES, ModelBundle
from mpdiffuser.models.schedule import CosineSchedule


@dataclass(frozen=True)
class Plan:
    """The result of one plan.

    actions: [a, du] the chosen candidate's first a = actions_per_plan actions, in env units.
    index: the chosen candidate. values: [N] V_n. costs: [N] C_n or None (no cost model).
    window: [H, D] the chosen normalized window [x_{t+1}, u_t]; windows: [N, H, D] all of them.
    """

    actions: np.ndarray
    index: int
    values: np.ndarray
    costs: np.ndarray | None
    window: np.ndarray
    windows: np.ndarray

    @property
    def action(self) -> np.ndarray:
        """[du] the first action u_0 in env units."""
        return self.actions[0]


def _round_input_bf16(module, args):
    x = args[0]
    return (x.to(torch.bfloat16).to(x.dtype), *args[1:])


WEIGHT_LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.ConvTranspose1d)


@contextlib.contextmanager
def layer_numerics(networks, fast: bool):
    """Within it, the weight layers of `networks` (modules, None skipped) run in the fast numeric
    mode when `fast`: each rounds its input to bfloat16 (nearest even) first (module docstring)."""
    handles = [] if not fast else [
        layer.register_forward_pre_hook(_round_input_bf16)
        for net in networks if net is not None for layer in net.modules() if isinstance(layer, WEIGHT_LAYERS)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def check_windows(windows, shape: tuple) -> np.ndarray:
    """Warm-start windows as float32 of exactly `shape` ([H, D], or [B, H, D] for a batch), finite."""
    windows = np.ascontiguousarray(windows, dtype=np.float32)
    if windows.shape != tuple(shape):
        raise ValueError(f"warm_start windows must have shape {tuple(shape)}, got {windows.shape}")
    if not np.isfinite(windows).all():
        raise ValueError("warm_start window holds NaN or infinity")
    return windows


def select_candidate(values: np.ndarray, costs: np.ndarray | None, budget: float | None) -> int:
    """design section 3 step 3: argmax V; with a budget b, the feasible (C <= b) candidate of largest V,
    else the one of smallest C. Ties go to the lowest index."""
    values = np.asarray(values)
    if budget is None or costs is None:
        return int(np.argmax(values))
    costs = np.asarray(costs)
    feasible = costs <= budget
    if feasible.any():
        return int(np.argmax(np.where(feasible, values, -np.inf)))
    return int(np.argmin(costs))


class ReferenceSampler:
    """Plans with a ModelBundle; float32 PyTorch, one eager call per layer and step.

    device: where the networks run ("cpu", or "cuda" for the GPU benchmarks' PyTorch peer; the
    bundle's modules are moved there). Plans are returned as NumPy arrays either way.
    """

    def __init__(self, bundle: ModelBundle, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        for name in MODEL_NAMES:
            module = getattr(bundle, name)
            if module is not None:
                module.to(self.device)
        self.bundle = bundle
        self.spec = bundle.spec
        # One default rule for every sampler: the bundle's (or model file's) stored options.
        self.defaults = self.spec.sampler_defaults or SamplerOptions()
        self._constants: dict[tuple, torch.Tensor] = {}
        self._fixed_index = torch.tensor(self.spec.fixed_state_dims, dtype=torch.long, device=self.device)
        m = self.spec.model
        self.horizon, self.num_steps = m.horizon, m.num_steps
        self.sample_prediction = m.prediction == "sample"
        self.dx, self.du = self.spec.state_dim, self.spec.action_dim
        s = CosineSchedule.make(m.num_steps)
        f32 = lambda a: torch.tensor(a, dtype=torch.float32, device=self.device)  # noqa: E731
        self._sqrt_ab = f32(np.sqrt(s.alpha_bar))
        self._sqrt_1mab = f32(np.sqrt(1.0 - s.alpha_bar))
        self._c1, self._c2, self._sigma = f32(s.posterior_c1), f32(s.posterior_c2), f32(s.posterior_sigma)

    # ---- pieces --------------------------------------------------------------------------------
    def clean_estimate(self, v: torch.Tensor, out: torch.Tensor, k: int) -> torch.Tensor:
        """The clean window implied by the network output at level k, clipped to [-1, 1]:
        (v - sqrt(1-abar_k) out) / sqrt(abar_k) for epsilon-prediction, out itself for sample-prediction."""
        if self.sample_prediction:
            return out.clamp(-1.0, 1.0)
        i = k - 1
        return ((v - self._sqrt_1mab[i] * out) / self._sqrt_ab[i]).clamp(-1.0, 1.0)

    def posterior_mean(self, v: torch.Tensor, out: torch.Tensor, k: int) -> torch.Tensor:
        """mu_k(v, out) = c1 clean_estimate(v, out, k) + c2 v."""
        return self._c1[k - 1] * self.clean_estimate(v, out, k) + self._c2[k - 1] * v

    def posterior_sigma(self, k: int) -> torch.Tensor:
        """sigma_k, the standard deviation of the draw added at level k > 1 (before temperature)."""
        return self._sigma[k - 1]

    def shifted(self, previous: np.ndarray | torch.Tensor, shift: int) -> torch.Tensor:
        """design section 3, warm start: S[i] = prev[i + shift] for i < H - shift, then prev[H - 1]. [H, D]."""
        prev = previous if isinstance(previous, torch.Tensor) else torch.from_numpy(np.asarray(previous, np.float32))
        prev = prev.to(self.device)
        rows = torch.clamp(torch.arange(self.horizon, device=self.device) + shift, max=self.horizon - 1)
        return prev[rows]


    @staticmethod
    def guided(net, args_cond: tuple, args_uncond: tuple, w: float) -> torch.Tensor:
        """eps(., 0) + w (eps(., c) - eps(., 0)), the 2N rows evaluated as one batch."""
        if w == 1.0:
            return net(*args_cond)
        n = args_cond[0].shape[0]
        both = net(*(torch.cat([a, b]) for a, b in zip(args_cond, args_uncond)))
        eps_c, eps_u = both[:n], both[n:]
        return eps_u + w * (eps_c - eps_u)

    def check_state(self, state: np.ndarray) -> np.ndarray:
        state = np.asarray(state, dtype=np.float32)
        if state.shape != (self.dx,):
            raise ValueError(f"state must have shape ({self.dx},), got {state.shape}")
        if not np.isfinite(state).all():
            raise ValueError(f"state holds NaN or infinity at indices {np.flatnonzero(~np.isfinite(state)).tolist()}")
        check_state_range(state[None], self.spec.states.low, self.spec.states.high)
        return state

    def condition(self, options: SamplerOptions) -> np.ndarray:
        return self.spec.conditions.condition(options.return_target, options.cost_limit)

    def _constant(self, key: tuple, make) -> torch.Tensor:
        """A small per-option tensor on the device, made once: no host-to-device copy happens in
        later plans, so a warmed-up plan can be captured in a CUDA graph."""
        if key not in self._constants:
            self._constants[key] = torch.as_tensor(make(), dtype=torch.float32).to(self.device)
        return self._constants[key]

    def noise(self, seed: int, candidates: np.ndarray) -> torch.Tensor:
        """Every draw of one plan, [K + 1, N, H, D] on the device; row step - 1 is z(seed, n, step)."""
        H, D = self.horizon, self.dx + self.du
        steps = [noise.normal_blocks(seed, candidates, step, H * D) for step in range(1, self.num_steps + 2)]
        return torch.from_numpy(np.stack(steps)).view(len(steps), len(candidates), H, D).to(self.device)

    @torch.no_grad()
    def sample_windows(self, x0: np.ndarray | torch.Tensor, seed: int, options: SamplerOptions,
                       candidates: np.ndarray | None = None, draws: torch.Tensor | None = None,
                       warm_start: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
        """x0: [dx] normalized state; candidates: [N] indices (default 0..N-1) -> tau^0 [N, H, D].
        draws: this plan's noise from `noise(seed, candidates)`, precomputed (the GPU benchmark's
        CUDA-graph peer needs every input in device memory); by default drawn step by step.
        warm_start: [H, D] the previous plan's chosen normalized window; used when
        options.warm_start_level > 0, shifted by options.actions_per_plan."""
        H, dx, K = self.horizon, self.dx, self.num_steps
        cand = np.arange(options.num_candidates) if candidates is None else np.asarray(candidates)
        N, D = len(cand), self.dx + self.du
        x0 = x0 if isinstance(x0, torch.Tensor) else torch.from_numpy(np.asarray(x0, dtype=np.float32))
        x0_rows = x0.to(self.device).expand(N, dx)
        cond = self._constant(("cond", options.return_target, options.cost_limit),
                              lambda: self.condition(options)).expand(N, -1)
        zero = torch.zeros_like(cond)
        if draws is not None:
            z = lambda step: draws[step - 1]  # noqa: E731
        else:
            z = lambda step: torch.from_numpy(  # noqa: E731
                noise.normal_blocks(seed, cand, step, H * D)).view(N, H, D).to(self.device)
        scale = float(np.float32(np.sqrt(np.float32(options.temperature))))  # sqrt(tau) in float32, as the cores
        start = K
        if warm_start is not None and options.warm_start_level > 0:
            start = options.warm_start_level
            shifted = self.shifted(warm_start, options.actions_per_plan)
            tau = self._sqrt_ab[start - 1] * shifted + self._sqrt_1mab[start - 1] * (scale * z(K + 1))
        else:
            tau = scale * z(K + 1)
        tau = self.pin(tau, x0_rows)
        with layer_numerics((self.bundle.planner, self.bundle.dynamics), bool(options.fast_numerics)):
            return self._denoise(tau, x0_rows, cond, zero, start, scale, z, options)

    def _denoise(self, tau, x0_rows, cond, zero, start, scale, z, options) -> torch.Tensor:
        """The steps k = start .. 1 of sample_windows from the initial window tau."""
        N = tau.shape[0]
        dx = self.dx
        w, w_d, lam = float(options.guidance), float(options.dynamics_guidance), float(options.dynamics_weight)
        for k in range(start, 0, -1):
            kk = torch.full((N,), k, dtype=torch.long, device=self.device)
            states, actions = tau[..., :dx], tau[..., dx:]
            if options.dynamics_at(k):
                eps_d = self.guided(self.bundle.dynamics, (states, actions, x0_rows, cond, kk),
                                     (states, actions, x0_rows, zero, kk), w_d)
                states = (1.0 - lam) * states + lam * self.posterior_mean(states, eps_d, k)
                tau = self.pin(torch.cat([states, actions], dim=-1), x0_rows)
            eps_p = self.guided(self.bundle.planner, (tau, x0_rows, cond, kk), (tau, x0_rows, zero, kk), w)
            tau = self.posterior_mean(tau, eps_p, k)
            if k > 1:
                tau = tau + self._sigma[k - 1] * (scale * z(k))
            tau = self.pin(tau, x0_rows)
        return tau

    def pin(self, tau: torch.Tensor, x0_rows: torch.Tensor) -> torch.Tensor:
        """tau [N, H, D] with the fixed state dimensions (spec.fixed_state_dims: a goal-conditioned
        robot's desired goal) of every planned state set to x_0's, as every backend does after the
        initial window and after each update."""
        fixed = self.spec.fixed_state_dims
        if not fixed:
            return tau
        index = self._fixed_index
        tau = tau.clone()
        tau[..., index] = x0_rows[:, None, :][..., index].expand(-1, tau.shape[1], -1)
        return tau

    @torch.no_grad()
    def rank_tensors(self, x0: np.ndarray | torch.Tensor, tau: torch.Tensor, discount: float,
                     fast: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """V [N] and C [N] (None without a cost model) of finished windows tau [N, H, D], on the
        device; fast: in the fast numeric mode (options.fast_numerics)."""
        with layer_numerics((self.bundle.reward, self.bundle.cost), fast):
            return self._rank(x0, tau, discount)

    def _rank(self, x0, tau: torch.Tensor, discount: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        N, H, dx = tau.shape[0], self.horizon, self.dx
        x0 = x0 if isinstance(x0, torch.Tensor) else torch.from_numpy(np.asarray(x0, dtype=np.float32))
        x0_row = x0.to(self.device).view(1, 1, dx).expand(N, 1, dx)
        x = torch.cat([x0_row, tau[:, :-1, :dx]], dim=1)  # [N, H, dx]: x_0..x_{H-1}
        u = tau[..., dx:]  # [N, H, du]: u_0..u_{H-1}
        weights = self._constant(("gamma", discount, H), lambda: (  # float64 powers rounded to float32
            torch.tensor(discount, dtype=torch.float64) ** torch.arange(H, dtype=torch.float64)).to(torch.float32))
        out = self.bundle.reward(x, u)  # [N, H, 1 or 2]
        values = (out[..., 0] * weights).sum(dim=1)
        if out.shape[-1] == 2:
            fell = out[..., 1] > 0  # [N, H]
            none = torch.full((N,), -1, device=self.device)
            first = torch.where(fell.any(dim=1), fell.to(torch.int64).argmax(dim=1), none)
            penalty = torch.where(first >= 0, TERMINATION_PENALTY * weights[first.clamp(min=0)],
                                  torch.zeros(N, device=self.device))
            values = values - penalty
        costs = None
        if self.bundle.cost is not None:
            costs = (self.bundle.cost(x, u)[..., 0] * weights).sum(dim=1)
        return values, costs

    def rank(self, x0: np.ndarray, tau: torch.Tensor, discount: float,
             fast: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """V [N] and C [N] (None without a cost model) of finished windows tau [N, H, D], as NumPy."""
        values, costs = self.rank_tensors(x0, tau, discount, fast)
        return values.cpu().numpy(), None if costs is None else costs.cpu().numpy()

    # ---- the plan ------------------------------------------------------------------------------
    def plan(self, state: np.ndarray, seed: int, options: SamplerOptions | None = None,
             warm_start: np.ndarray | None = None) -> Plan:
        """One MPDiffuser plan from the raw (env-unit) state [dx]; options default to the bundle's
        stored ones (self.defaults), as every sampler's do. warm_start: the previous plan's
        `window` [H, D], used when options.warm_start_level > 0 (None plans cold)."""
        options = check_options_type(options) or self.defaults
        options.check_for(self.num_steps, self.horizon)
        if warm_start is not None:
            warm_start = check_windows(warm_start, (self.horizon, self.dx + self.du))
        x0 = self.spec.states.normalize(self.check_state(state))
        tau = self.sample_windows(x0, seed, options, warm_start=warm_start)
        values, costs = self.rank(x0, tau, options.discount, bool(options.fast_numerics))
        index = select_candidate(values, costs, options.cost_budget)
        windows = tau.cpu().numpy()
        actions = self.spec.actions.unnormalize(windows[index, : options.actions_per_plan, self.dx:])
        check_plan_finite(values, windows[index], actions, seed)
        return Plan(actions, index, values, costs, windows[index], windows)


def check_plan_finite(values: np.ndarray, window: np.ndarray, actions: np.ndarray, seed: int) -> None:
    """The reference's twin of the native MPD_ERR_NON_FINITE_PLAN: values [N], the chosen window
    [H, D] and its actions [a, du] must be finite, or the plan must not be executed."""
    for name, array in (("values", values), ("chosen window", window), ("actions", actions)):
        if not np.isfinite(array).all():
            raise FloatingPointError(f"plan (seed {seed}): the {name} came out NaN or infinite (corrupt weights or a "
                                     "diverging sampler); do not execute it")


def check_state_range(states: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
    """Refuse raw states [B, dx] that lie more than STATE_RANGE_LIMIT half-ranges of the training
    data [low, high] from its middle in some dimension (the native MPD_ERR_STATE_OUT_OF_RANGE):
    a sensor or unit fault that no model trained on the data can plan from."""
    mid = (high.astype(np.float64) + low) / 2
    half = (high.astype(np.float64) - low) / 2
    half = np.maximum(np.where(half > 0, half, 1.0), MIN_HALF_RANGE)  # the native normalizer's half, floored
    far = np.abs(states.astype(np.float64) - mid) > STATE_RANGE_LIMIT * half
    if far.any():
        row, dim = np.argwhere(far)[0]
        raise ValueError(f"state[{dim}] = {states[row, dim]:.6g}{f' (row {row})' if len(states) > 1 else ''} lies more "
                         f"than {STATE_RANGE_LIMIT:g} half-ranges from the training data's [{low[dim]:.6g}, "
                         f"{high[dim]:.6g}]: a sensor or unit fault? The models cannot plan from it")


def check_options_type(options):
    """options must be a SamplerOptions or None (a dict is not: its keys would go unchecked)."""
    if options is not None and not isinstance(options, SamplerOptions):
        raise TypeError(f"options must be a SamplerOptions or None, got {type(options).__name__}; for example "
                        "sampler.defaults.replace(num_candidates=8)")
    return options
