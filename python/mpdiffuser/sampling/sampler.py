"""The public sampler: one model file, three backends with the same answers (design section 2).

    sampler = Sampler("hopper.safetensors", backend="cpu")   # or "torch" (the reference), "cuda"
    plan = sampler.plan(observation, seed=0)                  # plan.action: [du] in env units

"cpu" and "cuda" run the native core (the GIL is released while planning); "torch" runs the
PyTorch reference sampler on the same weights. Arguments are checked here, before any native call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mpdiffuser.config import BACKENDS, OPTION_SPECS, SamplerOptions  # noqa: F401  (sampling.sampler.BACKENDS)
from mpdiffuser.sampling.reference import Plan, check_options_type, check_state_range, check_windows



class Sampler:
    """Plans with the models of a model file (see `mpdiffuser.export`).

    backend: "cpu" (native, threads over candidates), "cuda" (native, GPU) or "torch" (reference).
    threads: CPU threads (0 = all hardware threads). env_id: when given, the file must be for it.
    """

    def __init__(self, model_file: str | Path, backend: str = "cpu", *, threads: int = 0, env_id: str | None = None):
        from mpdiffuser.export import read_model_file

        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
            raise ValueError(f"threads must be an integer >= 0, got {threads!r}")
        self.model_file = Path(model_file)
        self.backend = backend
        self.threads = int(threads)
        self.spec, _, self.defaults = read_model_file(self.model_file)
        if env_id is not None and self.spec.env_id is not None and env_id != self.spec.env_id:
            raise ValueError(f"{self.model_file} holds models for {self.spec.env_id}, not {env_id}")
        self._reference = None
        self._native = None
        self._workspace = None
        if backend == "torch":
            from mpdiffuser.export import bundle_from_model_file
            from mpdiffuser.sampling.reference import ReferenceSampler

            bundle, _ = bundle_from_model_file(self.model_file)
            self._reference = ReferenceSampler(bundle)
        else:
            from mpdiffuser.native import core

            _core = core()

            from mpdiffuser.models.registry import family

            if backend == "cuda" and not family(self.spec.model.architecture).cuda:
                raise RuntimeError(f"backend 'cuda' does not run the {self.spec.model.architecture} family yet (mlp "
                                   "only); plan this model file with backend 'cpu' or 'torch'")
            if backend == "cuda":
                info = _core.build_info()
                if not info["cuda_compiled"]:
                    raise RuntimeError("backend 'cuda': this mpdiffuser was built without CUDA (no nvcc was found "
                                       "at install time); reinstall on a machine with the CUDA toolkit, or use "
                                       "backend 'cpu'")
                if not _core.cuda_device_available():
                    raise RuntimeError(f"backend 'cuda': the CUDA backend is built (sm {info['cuda_architectures']}) "
                                       "but no CUDA device is visible (no GPU, no driver, or CUDA_VISIBLE_DEVICES "
                                       "hides it); use backend 'cpu'")
            self._native = _core.Model(str(self.model_file))
            self._ensure_workspace(self.defaults.num_candidates)

    def _ensure_workspace(self, num_candidates: int) -> None:
        """(Re)size the native workspace; happens outside the timed plan path only when N grows.
        A CPU workspace that would not fit in the memory available now is refused before it is
        allocated, naming num_candidates."""
        from mpdiffuser.native import core

        _core = core()

        if self._workspace is None or self._workspace.max_candidates < num_candidates:
            if self.backend == "cpu":
                need = self._native.workspace_bytes("cpu", num_candidates, self.threads)
                available = available_memory()
                if available is not None and need > available:
                    raise ValueError(f"num_candidates = {num_candidates} needs a {need / 2**30:.2f} GiB workspace; "
                                     f"this machine has {available / 2**30:.2f} GiB available: plan fewer candidates")
            self._workspace = _core.Workspace(self._native, self.backend, num_candidates, self.threads)

    def _native_options(self, options: SamplerOptions):
        from mpdiffuser.native import core

        _core = core()

        o = _core.Options()
        for spec in OPTION_SPECS:
            value = getattr(options, spec.name)
            if spec.kind == "optional_real":
                setattr(o, f"has_{spec.name}", 0 if value is None else 1)
                value = 0.0 if value is None else value
            setattr(o, spec.name, value)
        return o

    def _check(self, states: np.ndarray, seeds) -> tuple[np.ndarray, np.ndarray]:
        dx = self.spec.state_dim
        states = np.asarray(states, dtype=np.float32)
        if states.ndim != 2 or states.shape[1] != dx:
            raise ValueError(f"states must have shape (batch, {dx}), got {states.shape}")
        bad = ~np.isfinite(states)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(f"state holds NaN or infinity (row {row}, index {col})")
        check_state_range(states, self.spec.states.low, self.spec.states.high)
        seeds = np.asarray(seeds)
        if seeds.dtype == object and seeds.shape == (states.shape[0],) and all(
                isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in seeds):
            raise ValueError(f"seeds must be in [0, 2^64) (the Philox key), got {max(seeds, key=abs)}")
        if seeds.shape != (states.shape[0],) or (seeds.size and seeds.dtype.kind not in "iu"):
            raise ValueError(f"seeds must be {states.shape[0]} integers, got {seeds!r}")
        if seeds.size and seeds.min() < 0:
            raise ValueError("seeds must be non-negative")
        return states, seeds.astype(np.uint64)

    def warm_up(self, options: SamplerOptions | None = None) -> None:
        """Sizes the workspace for these options and plans once (from the middle of the state
        box; the result is dropped), so that a real-time loop's first plan is not slower than the
        rest: the workspace, the GPU module and the first launch cost 20-30 ms on an H100."""
        mid = ((self.spec.states.low + self.spec.states.high) / 2).astype(np.float32)
        self.plan(mid, 0, options)

    def plan(self, state: np.ndarray, seed: int, options: SamplerOptions | None = None,
             warm_start: np.ndarray | None = None) -> Plan:
        """One plan from the raw (env-unit) state [dx]; options default to the file's.
        warm_start: the previous plan's `window` [H, D]; used when options.warm_start_level > 0
        (shifted by options.actions_per_plan and re-noised to that level), None plans cold."""
        state = np.asarray(state, dtype=np.float32)
        if state.shape != (self.spec.state_dim,):
            raise ValueError(f"state must have shape ({self.spec.state_dim},), got {state.shape}")
        check_seed(seed)
        warm = None if warm_start is None else np.asarray(warm_start, dtype=np.float32)[None]
        return self.plan_batch(state[None], [int(seed)], options, warm)[0]

    def plan_batch(self, states: np.ndarray, seeds, options: SamplerOptions | None = None,
                   warm_starts: np.ndarray | None = None) -> list[Plan]:
        """One plan per row of states [B, dx] with seeds [B]; warm_starts: None or [B, H, D]
        previous windows (see `plan`)."""
        options = check_options_type(options) or self.defaults
        states, seeds = self._check(states, seeds)
        options.check_for(self.spec.model.num_steps, self.spec.model.horizon)
        if warm_starts is not None:
            warm_starts = check_windows(warm_starts, (len(states), self.spec.model.horizon,
                                                      self.spec.state_dim + self.spec.action_dim))
        if self._reference is not None:
            return [self._reference.plan(s, int(k), options, None if warm_starts is None else warm_starts[b])
                    for b, (s, k) in enumerate(zip(states, seeds))]
        self.spec.conditions.condition(options.return_target, options.cost_limit)  # cost-limit rules
        self._ensure_workspace(options.num_candidates)
        actions, index, values, costs, windows = self._workspace.plan_batch(
            states, seeds, self._native_options(options), True, warm_starts)
        return [Plan(actions[b], int(index[b]), values[b], None if costs is None else costs[b],
                     windows[b, index[b]], windows[b]) for b in range(len(states))]

    def plan_device(self, state, seed: int, options: SamplerOptions | None = None, *, actions, index,
                    values=None, costs=None, windows=None, stream=None) -> None:
        """CUDA backend: plan from device memory into device memory, asynchronously, no copies.

        Arrays are anything exposing `__cuda_array_interface__` (torch CUDA tensors, CuPy arrays),
        C-contiguous: state float32 [dx] in env units; actions float32 [actions_per_plan, du];
        index uint32 or int32 [1]; values, costs float32 [N] and windows float32 [N, H, D] or None.
        stream: a `torch.cuda.Stream`, a `cupy.cuda.Stream`, a raw cudaStream_t integer, or None
        (the legacy default stream); synchronize it before reading the outputs. A non-finite
        state is not reported here: index becomes 2**32 - 1 and the actions NaN.
        """
        if self.backend != "cuda":
            raise ValueError(f"plan_device needs backend 'cuda', this sampler is {self.backend!r}")
        options = check_options_type(options) or self.defaults
        check_seed(seed)
        self.spec.conditions.condition(options.return_target, options.cost_limit)  # cost-limit rules
        dx, du, H = self.spec.state_dim, self.spec.action_dim, self.spec.model.horizon
        if options.actions_per_plan > H:
            raise ValueError(f"actions_per_plan ({options.actions_per_plan}) exceeds the horizon ({H})")
        N = options.num_candidates
        pointers = {
            "state": device_pointer(state, "state", (dx,), ("<f4",)),
            "actions": device_pointer(actions, "actions", (options.actions_per_plan, du), ("<f4",)),
            "index": device_pointer(index, "index", (1,), ("<u4", "<i4")),
            "values": device_pointer(values, "values", (N,), ("<f4",)),
            "costs": device_pointer(costs if self.spec.with_cost else None, "costs", (N,), ("<f4",)),
            "windows": device_pointer(windows, "windows", (N, H, dx + du), ("<f4",)),
        }
        self._ensure_workspace(N)
        self._workspace.plan_device(pointers["state"], int(seed), self._native_options(options), pointers["actions"],
                                    pointers["index"], pointers["values"], pointers["costs"], pointers["windows"],
                                    stream_handle(stream))

    def __repr__(self) -> str:
        return f"Sampler({str(self.model_file)!r}, backend={self.backend!r})"


def check_seed(seed) -> None:
    """A plan's seed: an integer in [0, 2^64) (the Philox key is 64 bits)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be in [0, 2^64) (the Philox key), got {seed}")


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (Linux MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def device_pointer(array, name: str, shape: tuple, typestrs: tuple) -> int:
    """The device address of `array` (0 for None) after checking its `__cuda_array_interface__`:
    shape, element type and C-contiguity."""
    if array is None:
        return 0
    interface = getattr(array, "__cuda_array_interface__", None)
    if interface is None:
        raise TypeError(f"{name} must be a device array with __cuda_array_interface__ (a torch CUDA tensor or a "
                        f"CuPy array), got {type(array).__name__}")
    if tuple(interface["shape"]) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(interface['shape'])}")
    if interface["typestr"] not in typestrs:
        raise ValueError(f"{name} must have dtype {' or '.join(typestrs)}, got {interface['typestr']}")
    strides = interface.get("strides")
    if strides is not None:
        itemsize = int(interface["typestr"][2:])
        expected = [itemsize] * len(shape)
        for i in range(len(shape) - 2, -1, -1):
            expected[i] = expected[i + 1] * shape[i + 1]
        if any(s != e for s, e, n in zip(strides, expected, shape) if n > 1):
            raise ValueError(f"{name} must be C-contiguous, got strides {tuple(strides)}")
    pointer, read_only = interface["data"]
    if read_only and name != "state":
        raise ValueError(f"{name} is read-only")
    return int(pointer)


def stream_handle(stream) -> int:
    """A cudaStream_t as an integer from a torch or CuPy stream, an integer, or None (0)."""
    if stream is None:
        return 0
    for attribute in ("cuda_stream", "ptr"):  # torch.cuda.Stream, cupy.cuda.Stream
        if hasattr(stream, attribute):
            return int(getattr(stream, attribute))
    if isinstance(stream, (int, np.integer)) and not isinstance(stream, bool) and stream >= 0:
        return int(stream)
    raise TypeError(f"stream must be a torch or CuPy stream, an integer handle or None, got {type(stream).__name__}")
