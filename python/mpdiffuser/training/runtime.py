"""Where and how training runs: the device, the precision, torch.compile, and the process group
of a `torchrun` launch. None of it changes what is learned on one device in fp32; all of it is
outside TrainConfig so a checkpoint resumes on another device or precision."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import threading

import torch

from mpdiffuser.config import BATCHES, CAPTURE_MODES  # the first of each is the default

from mpdiffuser.config import PRECISION_NAMES  # noqa: E402

PRECISIONS = dict(zip(PRECISION_NAMES, (None, None, torch.bfloat16, torch.float16)))  # autocast dtypes


def resolve_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """"auto" -> the GPU of this rank when torch sees one, else the CPU; "cpu"; "cuda" or "cuda:i"."""
    if spec == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(f"--device {spec}: torch {torch.__version__} ({build}) sees no CUDA device; "
                             "use --device cpu or auto")
        index = local_rank if spec == "cuda" else _index(spec)
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return torch.device("cuda", index)
    raise ValueError(f"--device must be auto, cpu, cuda or cuda:<index>, got {spec!r}")


def _index(spec: str) -> int:
    try:
        index = int(spec.split(":", 1)[1])
    except ValueError:
        raise ValueError(f"--device {spec}: the index after 'cuda:' must be an integer") from None
    if index < 0:
        raise ValueError(f"--device {spec}: the index must be >= 0")
    return index


@dataclasses.dataclass(frozen=True)
class TrainRuntime:
    """How one process trains. rank / world_size: this process in a torchrun launch (0 / 1 alone).
    log_every: steps between loss rows in the CSV log (and TensorBoard, when installed)."""

    device: str = "cpu"
    # fp32 (exact, bit-reproducible), tf32 (TF32 tensor cores and cuDNN autotuning on a GPU), bf16
    # or fp16 autocast of forward and loss (fp16 with loss scaling)
    precision: str = "fp32"
    compile: bool = False  # torch.compile the networks
    rank: int = 0
    world_size: int = 1
    log_every: int = 50  # steps per row of the CSV loss log
    tensorboard: bool = True  # write TensorBoard events beside the CSV log when tensorboard is installed
    # where each step's batch is drawn: host (NumPy, copied over), device (the data on the training
    # device, drawn there), auto (device on a GPU, host on the CPU)
    batches: str = BATCHES[0]
    # on a GPU, replay each training step as one CUDA graph where it can be (auto: one process,
    # batches on the device, not fp16 or --compile), or never (off)
    capture: str = CAPTURE_MODES[0]

    def __post_init__(self) -> None:
        if self.capture not in CAPTURE_MODES:
            raise ValueError(f"capture must be {' or '.join(CAPTURE_MODES)}, got {self.capture!r}")
        if self.batches not in BATCHES:
            raise ValueError(f"batches must be one of {', '.join(BATCHES)}, got {self.batches!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside a world of {self.world_size}")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def device_batches(self) -> bool:
        """Whether batches are drawn on the training device (BATCHES)."""
        return self.batches == "device" or (self.batches == "auto" and self.torch_device.type == "cuda")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self, captured: bool = False):
        """Mixed precision for the forward pass and the loss; fp32 runs as it is. Inside a CUDA
        graph capture (`captured`) autocast's cast cache must be off: a cached cast of a weight
        would be recorded once and replayed stale after the optimizer changed the weight."""
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.torch_device.type, dtype=dtype, cache_enabled=not captured)

    def backend_flags(self):
        """TF32 matmuls and convolutions and cuDNN's autotuner for every precision but fp32, on a
        GPU, held process-wide while any training needs them (BACKEND_FLAGS): fp32 stays exact."""
        if self.torch_device.type != "cuda" or self.precision == "fp32":
            return contextlib.nullcontext()
        return BACKEND_FLAGS.held()

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range and needs none."""
        return torch.amp.GradScaler(self.torch_device.type) if self.precision == "fp16" else None

    def local_batch(self, batch_size: int) -> int:
        """This rank's share of the global batch: the world size must divide it."""
        if batch_size % self.world_size:
            raise ValueError(f"the batch size {batch_size} is not divisible by the world size {self.world_size} of "
                             "this torchrun launch; pass a --batch-size that is")
        return batch_size // self.world_size


def from_environment(device: str = "auto", **fields) -> TrainRuntime:
    """The runtime of this process: alone, or one rank of a `torchrun` launch (WORLD_SIZE > 1),
    whose process group this joins (NCCL on GPUs, gloo on the CPU). Each rank takes the GPU of
    its LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world == 1:
        return TrainRuntime(device=str(resolved), **fields)
    import torch.distributed as dist

    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        # torch.distributed.nn (imported by DistributedDataParallel on first use) gives ten of its
        # functions the default `group=group.WORLD`, evaluated at import: imported after the group
        # exists, it holds the group for the life of the interpreter and destroy_process_group
        # cannot free it. Imported first, the defaults are None and leaving frees the group.
        import torch.distributed.nn  # noqa: F401

        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
        atexit.register(leave_process_group)
    return TrainRuntime(device=str(resolved), rank=dist.get_rank(), world_size=dist.get_world_size(), **fields)


def leave_process_group() -> None:
    """Destroy this process's group, joining gloo's worker threads while the interpreter is alive.

    A group still alive at interpreter exit aborts the rank ("terminate called without an active
    exception"): a gloo worker thread that is still releasing the tensors of the last collective
    needs the GIL for them, and a thread that asks for the GIL during finalization is unwound
    through a noexcept destructor. Called at the end of `train` and at exit; a no-op alone. The
    DistributedDataParallel wrappers must be gone first (train_loop drops its own)."""
    import gc

    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()  # wrappers caught in reference cycles still hold the group


def barrier(runtime: TrainRuntime) -> None:
    """Wait for every rank (no-op alone): rank 0 writes files the others read next."""
    if runtime.distributed:
        import torch.distributed as dist

        dist.barrier()


def all_mean(runtime: TrainRuntime, values: torch.Tensor) -> torch.Tensor:
    """The mean of `values` over the ranks (gloo has no AVG: sum, then divide)."""
    if not runtime.distributed:
        return values
    import torch.distributed as dist

    values = values.clone()
    dist.all_reduce(values)
    return values / runtime.world_size


def all_gather(runtime: TrainRuntime, obj) -> list:
    """Every rank's `obj`, in rank order."""
    if not runtime.distributed:
        return [obj]
    import torch.distributed as dist

    out = [None] * runtime.world_size
    dist.all_gather_object(out, obj)
    return out


class ProcessFlags:
    """Process-wide settings (torch's TF32 and cuDNN flags) held while any of several threads need
    them: the first holder saves and sets them, the last one out restores them. Saving and
    restoring per thread would let the first model to finish turn TF32 off under the others and
    the last leave it on for the process (a later float32 plan would then not be float32)."""

    def __init__(self, read, write, wanted):
        self._read, self._write, self._wanted = read, write, wanted  # read() -> saved; write(values)
        self._lock = threading.Lock()
        self._holders = 0
        self._saved = None

    @contextlib.contextmanager
    def held(self):
        with self._lock:
            if self._holders == 0:
                self._saved = self._read()
                self._write(self._wanted)
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    self._write(self._saved)


def _read_backend_flags():
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark


def _write_backend_flags(values) -> None:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = values


BACKEND_FLAGS = ProcessFlags(_read_backend_flags, _write_backend_flags, (True, True, True))
