"""The training loop every model shares: AdamW, EMA weights, gradient clipping, resumable and
continuable checkpoints, a loss log, a progress bar, on any device and precision, alone or as one
rank of a torchrun launch (DistributedDataParallel). A fixed seed gives the same result on the
same device."""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from mpdiffuser.config import LEGACY_TRAIN_FIELDS, TrainConfig
from mpdiffuser.logs import bars_show, logger, setting
from mpdiffuser.training.captured import WARMUP_STEPS, CapturedStep, capture_refusal
from mpdiffuser.training.log import LossLog
from mpdiffuser.training.runtime import TrainRuntime, all_gather, all_mean, barrier

Batch = dict[str, np.ndarray]
DeviceSample = Callable[[torch.Generator, int], dict[str, torch.Tensor]]
LossFn = Callable[[torch.nn.Module, dict, torch.Generator], "torch.Tensor | tuple[torch.Tensor, dict]"]

# Fields that may change between a checkpoint and the run that continues it: more steps continue
# the same run (no schedule depends on the total), and the checkpoint interval and validation
# change nothing that is learned.
CONTINUABLE_FIELDS = ("steps", "checkpoint_every", "validate_every")
CHECKPOINT_FORMAT = 2


_GLOBAL_RNG = threading.Lock()  # initialized() seeds torch's one global generator


def initialized(build, seed: int):
    """`build()`, a fresh network whose initial weights depend on `seed` alone: torch's generator is
    seeded for the call and restored afterwards, so what the process did before (training a SAC
    policy, say) cannot change them; one call at a time, so models built in other threads
    (train_models at once) cannot either."""
    # The CPU generator alone: torch.manual_seed would reseed every GPU's default generator too,
    # under another thread's capture or replay.
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return build()


def rank_generators(seed: int, rank: int, device: torch.device) -> tuple[np.random.Generator, torch.Generator]:
    """The batch stream (NumPy) and the noise stream (torch, on `device`) of one rank. Rank 0
    alone has the streams of an ordinary run, so one process reproduces earlier training."""
    rng = np.random.default_rng(seed if rank == 0 else [seed, rank])
    noise_gen = torch.Generator(device=device).manual_seed(seed + 1 + 7919 * rank)
    return rng, noise_gen


def batch_generator(seed: int, rank: int, device: torch.device) -> torch.Generator:
    """The batch stream of one rank when batches are drawn on the device (TrainRuntime.batches):
    a torch.Generator on `device`, seeded apart from the noise stream."""
    return torch.Generator(device=device).manual_seed(0x5EED_0000_0000 + 7919 * seed + rank)


def optimizer_on_device(optimizer: torch.optim.Optimizer, device: torch.device, capturable: bool) -> None:
    """After load_state_dict: the fused kernel and `capturable` as this run wants them (a
    checkpoint keeps the flags of the run that wrote it), and the step counters on the device in
    float32, where a fused AdamW keeps them, capturable or not."""
    for group in optimizer.param_groups:
        group["fused"], group["capturable"] = True, capturable
    for state in optimizer.state.values():
        if "step" in state and isinstance(state["step"], torch.Tensor):
            state["step"] = state["step"].to(device, torch.float32)


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's state, unpickled with weights_only=True (tensors, numbers, strings only)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "rng" not in state:  # format 1: one process, RNG states as their own objects
        state["rng"] = [{"numpy": json.dumps(state.pop("numpy_rng")), "noise": state.pop("noise_rng")}]
        state["world_size"] = 1
    if not isinstance(state["history"], torch.Tensor):
        state["history"] = torch.tensor(state["history"], dtype=torch.float64)
    return state


class NothingToDo(Exception):
    """The checkpoint has already reached the requested steps; `state` is what it holds."""

    def __init__(self, message: str, state: dict):
        super().__init__(message)
        self.state = state


def final_loss(history) -> float:
    """The mean loss of the last 100 steps of a history (NaN when empty)."""
    tail = [float(v) for v in history[-100:]]
    return sum(tail) / len(tail) if tail else float("nan")


def train_loop(model: torch.nn.Module, loss_fn: LossFn, sample: Callable[[np.random.Generator, int], Batch],
               config: TrainConfig, checkpoint: str | Path | None = None, desc: str = "train", progress: bool = True,
               identity: dict | None = None, runtime: TrainRuntime | None = None, log: LossLog | None = None,
               validate: Callable[[torch.nn.Module, int], dict] | None = None,
               device_sample: DeviceSample | None = None,
               evaluate: Callable[[torch.nn.Module, int], dict] | None = None,
               evaluate_every: int = 0, unread: tuple[str, ...] = ()) -> tuple[torch.nn.Module, list[float]]:
    """Train `model` in place for config.steps steps; returns (EMA copy, loss history, one mean
    over the ranks per step). The model and the EMA copy end on the CPU.

    `checkpoint`: resumable state (model, EMA, optimizer, step, every rank's RNG states) written
    every config.checkpoint_every steps and at the end; an existing one is resumed from, so an
    interrupted run loses at most one checkpoint interval, and one with fewer steps than
    config.steps is continued. Either way the result equals an uninterrupted run with the same
    seed. `identity` (for example the datasets' names and sizes) must match too, so a checkpoint
    of other data is never resumed. A checkpoint already at config.steps raises NothingToDo.

    `loss_fn` returns the loss, or (loss, {name: scalar}) with more values for the log.
    `runtime`: device, precision, compile, rank and world size (default: one process on the CPU,
    fp32). Under torchrun each rank draws its own batches and noise; gradients are averaged by
    DistributedDataParallel; rank 0 writes the checkpoint and the log.
    `validate(ema, step)`, called on rank 0 every config.validate_every steps, returns values
    for the log; so does `evaluate(ema, step)` every `evaluate_every` steps (closed-loop scores).
    `device_sample(gen, batch)`: the same batches drawn on the training device (a DeviceWindows
    or DeviceTransitions sampler), used when runtime.device_batches; then no NumPy, no host copy
    and no synchronization happen inside a step, and the checkpoint holds that stream instead.
    `unread`: config fields this model's loss does not read; a checkpoint resumes whatever they were.
    """
    runtime = runtime or TrainRuntime()
    device = runtime.torch_device
    local_batch = runtime.local_batch(config.batch_size)
    model.to(device)
    rng, noise_gen = rank_generators(config.seed, runtime.rank, device)
    on_device = device_sample is not None and runtime.device_batches
    batch_gen = batch_generator(config.seed, runtime.rank, device) if on_device else None
    refusal = capture_refusal(runtime, on_device)
    # On a GPU: the fused AdamW kernel, capturable (its step count on the device) for the graph.
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
                                  **({"fused": True, "capturable": refusal is None} if cuda else {}))
    scaler = runtime.grad_scaler()
    ema = copy.deepcopy(model).requires_grad_(False)
    start, history = 0, []
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and checkpoint.exists():
        state = read_checkpoint(checkpoint)
        _check_resumable(state, config, identity, runtime, checkpoint, unread)
        start, history = state["step"], state["history"].tolist()
        if start == config.steps:
            raise NothingToDo(f"{checkpoint} is at step {start} already", state)
        if runtime.is_main and progress:
            logger.info(f"{desc.strip()}: resuming from step {start} of {config.steps} ({checkpoint})")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        if cuda:  # a checkpoint of an eager run brings capturable=False; the capture needs it on
            optimizer_on_device(optimizer, device, capturable=refusal is None)
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        mine = state["rng"][runtime.rank]
        if ("batches" in mine) != on_device:
            made, now = ("on the device", "on the host") if "batches" in mine else ("on the host", "on the device")
            raise ValueError(f"checkpoint {checkpoint} drew its batches {made}, this run draws them {now} (the "
                             "device decides: host on the CPU, device on a GPU); resume it where it was made, or "
                             f"{setting('force', True)} starts over")
        if on_device:
            batch_gen.set_state(mine["batches"])
        else:
            rng.bit_generator.state = json.loads(mine["numpy"])
        noise_gen.set_state(mine["noise"])

    def save(step: int) -> None:
        if checkpoint is None:
            return
        mine = {"batches": batch_gen.get_state()} if on_device else {"numpy": json.dumps(rng.bit_generator.state)}
        streams = all_gather(runtime, mine | {"noise": noise_gen.get_state()})
        if runtime.is_main:
            _write(step, streams)
        barrier(runtime)  # written before any rank reads it

    def _write(step: int, streams: list) -> None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = checkpoint.with_suffix(".tmp")
        state = {"format": CHECKPOINT_FORMAT, "model": _cpu(model.state_dict()), "ema": _cpu(ema.state_dict()),
                 "optimizer": optimizer.state_dict(), "rng": streams, "step": step,
                 "history": torch.tensor(history, dtype=torch.float64), "config": dict(config.__dict__),
                 "identity": identity, "world_size": runtime.world_size}
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        torch.save(state, tmp)
        tmp.replace(checkpoint)

    if runtime.distributed:  # every rank must resume from the same step, or their collectives pair up wrongly
        starts = all_gather(runtime, start)
        if len(set(starts)) > 1:
            raise RuntimeError(f"the ranks found checkpoints at steps {starts} ({checkpoint}): a torchrun launch needs "
                               "its checkpoints on a filesystem every rank shares")

    net = model
    if runtime.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if runtime.compile:
        net = torch.compile(net)
    if log is not None:
        log.resume(start)
    model.train()
    ema_params, params = list(ema.parameters()), list(model.parameters())
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc=desc,
               disable=None if progress and runtime.is_main else True, dynamic_ncols=True, leave=False)
    talking = progress and runtime.is_main and not bars_show(progress)  # no bar: progress lines through logging
    began = time.perf_counter()
    pending: list[torch.Tensor] = []  # per-step values not yet brought to the host (one sync per log row)
    unlogged: list[np.ndarray] = []  # values brought to the host but not yet in a log row
    names: list[str] = []  # the logged values' names, set by the first step
    clock = time.perf_counter()

    def one_step() -> torch.Tensor:
        """Draw a batch, forward, backward, clip, step; the logged values [n] on the device."""
        if on_device:
            batch = device_sample(batch_gen, local_batch)
        else:
            batch = {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in sample(rng, local_batch).items()}
        with runtime.autocast(captured=refusal is None):
            out = loss_fn(net, batch, noise_gen)
        loss, extra = out if isinstance(out, tuple) else (out, {})
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
        names[:] = ["loss", *extra]
        return torch.stack([loss.detach().float(), *(v.float() for v in extra.values())])

    captured, side = None, torch.cuda.Stream(device) if refusal is None else None
    # On the training device (cuda:1 need not be the current one), with TF32 and cuDNN autotuning
    # for tf32/bf16/fp16 on a GPU, held process-wide while any model trains with them.
    with torch.cuda.device(device) if cuda else contextlib.nullcontext(), runtime.backend_flags():
        for step in bar:
            if refusal is None and captured is None and step - start >= WARMUP_STEPS:
                try:
                    captured = CapturedStep(one_step, [batch_gen, noise_gen], side)
                    if runtime.is_main:
                        bar.write(f"{desc.strip()}: the training step is captured as a CUDA graph")
                except RuntimeError as exc:  # a capture this torch or driver cannot make: train on, eagerly
                    refusal = f"the capture failed ({str(exc).splitlines()[0]})"
                    torch.cuda.current_stream(device).synchronize()
                    optimizer_on_device(optimizer, device, capturable=False)  # as a run that never captures
                    bar.write(f"{desc.strip()}: training eagerly: {refusal}")
            if captured is not None:
                values = captured.replay().clone()
            elif side is not None:  # the warm-up steps before the capture, on a side stream
                side.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(side):
                    values = one_step()
                torch.cuda.current_stream(device).wait_stream(side)
            else:
                values = one_step()
            if (step + 1) % config.ema_every == 0:
                with torch.no_grad():
                    torch._foreach_lerp_(ema_params, params, 1.0 - config.ema_decay)
            pending.append(values)
            done = step + 1
            due_log = done % runtime.log_every == 0 or done == config.steps
            due_validation = validate is not None and config.validate_every > 0 and (
                done % config.validate_every == 0 or done == config.steps)
            due_eval = evaluate is not None and evaluate_every > 0 and (
                done % evaluate_every == 0 or done == config.steps)
            if due_log or due_validation or due_eval or done % config.checkpoint_every == 0:
                values = all_mean(runtime, torch.stack(pending)).cpu().numpy()  # [steps, values]
                pending.clear()
                if not np.isfinite(values).all():
                    raise FloatingPointError(f"{desc.strip()}: loss became {values[~np.isfinite(values)][0]} "
                                             f"by step {done}")
                history.extend(values[:, 0].tolist())
                unlogged.append(values)
                bar.set_postfix(loss=f"{np.mean(history[-50:]):.4f}")
            if due_log or due_validation or due_eval:
                rows = np.concatenate(unlogged)
                unlogged.clear()
                if log is not None and runtime.is_main:
                    speed = len(rows) / max(time.perf_counter() - clock, 1e-9)
                    row = dict(zip(names, rows.mean(axis=0).tolist()))
                    if due_validation:
                        row |= validate(ema, done)
                    if due_eval:
                        row |= evaluate(ema, done)
                        if talking or not progress:
                            logger.info(f"{desc.strip()}: step {done}, closed-loop return {row['eval_return']:.1f}")
                    log.write(done, row, steps_per_s=speed)
                    clock = time.perf_counter()
            if done % config.checkpoint_every == 0:
                save(done)
                if talking:
                    logger.info(f"{desc.strip()}: step {done}/{config.steps}, loss {np.mean(history[-50:]):.4f}, "
                                f"{(done - start) / max(time.perf_counter() - began, 1e-9):.1f} steps/s")
    save(config.steps)
    net = None  # the DDP wrapper holds the process group: leave_process_group can only free it once this is gone
    if log is not None:
        log.close()
    model.eval().cpu()
    return ema.eval().cpu(), history


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() for k, v in state.items()}


def _check_resumable(state: dict, config: TrainConfig, identity, runtime: TrainRuntime, path: Path,
                     unread: tuple[str, ...] = ()) -> None:
    # A field added to TrainConfig later resumes under the value that reproduces the training
    # before it existed; `unread`: fields this model's training does not read (any value resumes).
    saved = {**TrainConfig().__dict__, **LEGACY_TRAIN_FIELDS, **state["config"]}
    differ = sorted(k for k, v in config.__dict__.items()
                    if saved.get(k) != v and k not in CONTINUABLE_FIELDS and k not in unread)
    if differ:
        raise ValueError(f"checkpoint {path} was made with another training config ({', '.join(differ)}); "
                         f"{setting('force', True)} starts over")
    if _plain(state.get("identity")) != _plain(identity):
        raise ValueError(f"checkpoint {path} was made on other data; {setting('force', True)} starts over")
    if state["world_size"] != runtime.world_size:
        raise ValueError(f"checkpoint {path} was made by {state['world_size']} process(es), this run has "
                         f"{runtime.world_size}: resume it with the same world size, or {setting('force', True)} "
                         "starts over")
    if state["step"] > config.steps:
        raise ValueError(f"checkpoint {path} is at step {state['step']}, past {setting('steps', config.steps)}: give "
                         f"at least {state['step']} steps to continue it, or {setting('force', True)} to start over")


def _plain(value):
    """Tuples and lists compare alike (a checkpoint stores what it was given)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
