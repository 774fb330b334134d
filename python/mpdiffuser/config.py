"""Frozen configuration dataclasses (mirrored by plain structs in the C++ core)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

PREDICTIONS = ("epsilon", "sample")  # what the diffusion networks output (design section 3)
NORMALIZERS = ("minmax", "cdf")
RETURN_CONDITIONS = ("authors", "minmax")
# How a model file stores its networks' weight matrices and kernels (tensors of 2 or more
# dimensions): float32, or bfloat16 (rounded to nearest even at export; half the bytes; every
# backend computes in float32 with exactly those values, and the CPU backend streams them in half
# the bytes). Biases, GroupNorm parameters and normalizer tables are float32 in either.
WEIGHT_FORMATS = ("float32", "bf16")
ARCHITECTURES = ("mlp", "unet")  # network families of planner and dynamics (models/registry.py)
# A window H (dx + du) wider than this is a large robot's (Humanoid: 16 x 365 = 5840). Its default
# model is the U-Net, stored with bfloat16 weights and planning in the fast numeric mode
# (large_robot_model): the MLP's first and last layers grow with the window (40.7 ms a cold plan at
# 5840 on one core: every 20 ms tick late), the U-Net's convolutions do not (7.6 / 7.8 ms p50 / p99
# in that form), and HumanoidStandup-v5 controls at least as well with it when trained the default
# 5000 steps (3 seeds: 34575 +- 891 fast, 34876 +- 760 exact, against the MLP's 33304 +- 161 in
# 1500 steps; docs/results.md, "A 348-dimensional robot in closed loop"). Ant (16 x 35 = 560) stays
# far below.
LARGE_WINDOW = 2048
TERMINATION_PENALTY = 100.0  # subtracted at a fall: in the authors' return condition and the ranker's value
# Every backend refuses a state more than STATE_RANGE_LIMIT half-ranges of the training data from
# the data's middle in some dimension (the half-range at least MIN_HALF_RANGE env units): a sensor
# or unit fault, not a state the models can plan from (csrc/math/normalizer.h).
STATE_RANGE_LIMIT = 100.0
# Both model-file readers refuse a weight beyond +-WEIGHT_LIMIT (its plans would overflow, each
# backend its own way), a normalizer value beyond +-NORMALIZER_LIMIT or a dimension whose low
# exceeds its high (plans de-normalized through it would be nonsense returned as success)
# (csrc/format/model_file.h). low == high is a dimension the data never varied: it maps to 0.
WEIGHT_LIMIT = 1e6
NORMALIZER_LIMIT = 1e9
# Where a training step's batch is drawn (TrainRuntime.batches, train --batches). "host": NumPy
# gathers the windows and they are copied to the device (the CPU path, whose streams earlier
# checkpoints hold); "device": the data live on the training device and a torch.Generator draws
# the batch there, with no copy and no synchronization; "auto" (the default): device on a GPU,
# host on the CPU.
BATCHES = ("auto", "host", "device")
# Training precisions (TrainRuntime.precision, train --precision): fp32 is exact and
# bit-reproducible from the seed; tf32 keeps fp32 tensors but lets a GPU's matmuls and
# convolutions use TF32 tensor cores and cuDNN pick its fastest convolutions (not bit-reproducible);
# bf16 and fp16 autocast the forward pass (fp16 with loss scaling).
PRECISION_NAMES = ("fp32", "tf32", "bf16", "fp16")
# Whether a GPU training step is replayed as a CUDA graph (TrainRuntime.capture, train --capture):
# "auto" where it can be (training/captured.py says when), "off" never. The first is the default.
CAPTURE_MODES = ("auto", "off")
# Whether `train --model all` trains the bundle's models at the same time (train --at-once): "auto"
# on a GPU in one process (a thread and a CUDA stream each), "on" always, "off" one after another.
AT_ONCE_MODES = ("auto", "on", "off")
BACKENDS = ("torch", "cpu", "cuda")  # the samplers: the PyTorch reference, then the native registry's (backend/registry.cpp; a test holds them equal)
MODEL_NAMES = ("planner", "dynamics", "reward", "cost")  # a bundle's models, in training order (cost: data with costs)
RANKER_MODELS = ("reward", "cost")  # the models the ranker scores candidates with
MIN_HALF_RANGE = 1e-3

# TrainConfig fields added later, with the values that reproduce the training before them.
LEGACY_TRAIN_FIELDS = {"action_weight": 1.0, "ema_every": 1}

# ModelConfig fields added after format 1, with the values every older bundle and model file was
# made with: a file that lacks them loads as what it is.
LEGACY_MODEL_FIELDS = {"prediction": "epsilon", "normalizer": "minmax", "return_condition": "minmax"}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and conditioning of the three models (design section 3).

    Defaults are sized so that one guided plan fits a 20 ms control step on 2 CPU cores with the
    native backend: H = 16 and 256-wide residual MLPs. New bundles take `sized_for(dx, du)`, which
    widens the networks to 512 for robots whose window does not fit in 256 (Walker2d, HalfCheetah, Ant).
    """

    horizon: int = 16  # H: window length (actions u_0..u_{H-1}, states x_1..x_H)
    num_steps: int = 20  # K: diffusion steps
    width: int = 256  # hidden width of planner and dynamics networks
    layers: int = 3  # L: hidden layers; layer L is the output layer
    ranker_width: int = 128
    ranker_layers: int = 2
    return_discount: float = 0.997  # discount of the return-to-go condition g (authors: 0.997)
    cost_scale: float = 0.1  # s_c: the cost limit enters the condition as l * s_c
    condition_dropout: float = 0.25  # classifier-free guidance training
    # What planner and dynamics networks predict: the clean window ("sample", Diffuser's choice for
    # locomotion) or the noise ("epsilon", the authors'); docs/results.md compares them.
    prediction: str = "sample"
    normalizer: str = "minmax"  # "minmax" or "cdf" (empirical CDF per dimension, the authors')
    # "authors": discounted return-to-go with TERMINATION_PENALTY at a fall, over the best
    # episode-start return (g = 1 asks for the best start in the data); "minmax": (rtg - min) / (max - min).
    return_condition: str = "authors"
    # The planner's and dynamics model's network family: "mlp" (residual MLPs over the flattened
    # window) or "unet" (the authors' temporal U-Net with FiLM), both on every backend. The unet's
    # sizes: channels unet_dim * unet_mults[i] per level, condition embeddings unet_embed_dim wide
    # (authors: 128, (1, 4, 8), 128).
    architecture: str = "mlp"
    unet_dim: int = 32  # unet: channels of the first level
    unet_mults: tuple[int, ...] = (1, 2, 4)  # unet: channel multiples per level
    unet_embed_dim: int = 32  # unet: width of the x_0 and condition embeddings

    @classmethod
    def sized_for(cls, state_dim: int, action_dim: int, **changes) -> "ModelConfig":
        """The default architecture for a robot: width 256 while the flattened window H * (dx + du)
        fits in it (Hopper: 16 * 14 = 224), else 512. Measured on Walker2d-v5 (16 * 23 = 368),
        planner loss after 3000 steps: 0.47 at width 256, 0.23 at 512, 0.20 at 1024; at 256 the
        sampled windows were noise and every episode fell within a few steps. 512 is the cap so a
        plan of the default size still fits a 20 ms control step on 2 CPU cores (Ant included).
        A window wider than LARGE_WINDOW takes the U-Net (a large robot's model). `changes`
        (horizon, width, architecture, ...) override the defaults; an explicit width is kept."""
        horizon = changes.get("horizon", cls.horizon)
        window = horizon * (state_dim + action_dim)
        width = 256 if window <= 256 else 512
        family = {"architecture": "unet"} if window > LARGE_WINDOW else {}
        return cls(**({"width": width} | family | changes))

    def __post_init__(self) -> None:
        for name in ("horizon", "num_steps", "width", "layers", "ranker_width", "ranker_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if not 0.0 < self.return_discount <= 1.0:
            raise ValueError(f"ModelConfig.return_discount must be in (0, 1], got {self.return_discount}")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"ModelConfig.condition_dropout must be in [0, 1), got {self.condition_dropout}")
        for name in ("unet_dim", "unet_embed_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValueError(f"ModelConfig.{name} must be an integer >= 2, got {value!r}")
        if not isinstance(self.unet_mults, tuple):
            object.__setattr__(self, "unet_mults", tuple(self.unet_mults))  # from JSON: a list
        if self.architecture == "unet":
            from mpdiffuser.models.unet import check_unet

            check_unet(self.horizon, self.unet_dim, self.unet_mults)
        for name, choices in (("prediction", PREDICTIONS), ("normalizer", NORMALIZERS),
                              ("return_condition", RETURN_CONDITIONS), ("architecture", ARCHITECTURES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"ModelConfig.{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")

    def large_robot_model(self, state_dim: int, action_dim: int) -> bool:
        """A large robot's U-Net (window wider than LARGE_WINDOW): its model files store bfloat16
        weights and plan in the fast numeric mode unless told otherwise (export --weights,
        --fast-numerics)."""
        return self.architecture == "unet" and self.horizon * (state_dim + action_dim) > LARGE_WINDOW

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """A stored config; fields it predates take the values it was made with (LEGACY_MODEL_FIELDS)."""
        return cls(**(LEGACY_MODEL_FIELDS | d))


@dataclass(frozen=True)
class OptionSpec:
    """One sampler option of the table csrc/include/mpdiffuser/options.def, the one place options
    are declared (read through the native core, `_core.option_specs()`)."""

    name: str
    kind: str  # "count" (an integer), "real" (a finite number) or "optional_real" (a number or None)
    default: int | float | None
    low: int | float
    high: int | float  # the upper end, unless bound says it is the model's H ("horizon") or K - 1 ("levels")
    bound: str
    since: int  # the model-file format version that introduced it
    legacy: str  # its value in older files: a number, or the name of the option whose value they used
    flags: str  # the command line's flags, space-separated ("" for none)
    help: str

    def high_for(self, num_steps: int | None = None, horizon: int | None = None) -> int | float:
        """The upper end for a model of K = num_steps and H = horizon (the table's without one)."""
        if self.bound == "horizon" and horizon is not None:
            return horizon
        if self.bound == "levels" and num_steps is not None:
            return num_steps - 1
        return self.high

    def check(self, value, num_steps: int | None = None, horizon: int | None = None) -> None:
        """Raises ValueError, with the C API's message (`_core.option_range_message`), when `value`
        is not a valid value of this option."""
        if value is None and self.kind == "optional_real":
            return
        number = numbers.Integral if self.kind == "count" else numbers.Real
        high = self.high_for(num_steps, horizon)
        if isinstance(value, bool) or not isinstance(value, number):
            raise ValueError(f"{self.name} must be {'an integer' if self.kind == 'count' else 'a number'}"
                             f"{' or None' if self.kind == 'optional_real' else ''}, got {value!r} ({self.help})")
        if not (self.low <= value <= high and math.isfinite(value)):
            word = OPTION_MESSAGES["COUNT_WORD" if self.kind == "count" else "REAL_WORD"]
            raise ValueError(OPTION_MESSAGES["RANGE_MESSAGE"] % (self.name, word, self.low, high, value, self.help))


def _option_messages() -> dict[str, str]:
    """The range message's format and the kind words, from options.def (the C API prints the same)."""
    from mpdiffuser import option_table

    return option_table.messages(option_table.table_file().read_text())


def _option_specs() -> tuple[OptionSpec, ...]:
    """The table from the native core, or (a training node without it) from options.def itself."""
    from mpdiffuser import native, option_table

    specs = native.core().option_specs() if native.available() else option_table.read()
    return tuple(OptionSpec(**spec) for spec in specs)


OPTION_SPECS = _option_specs()
OPTION_MESSAGES = _option_messages()
OPTIONS = {spec.name: spec for spec in OPTION_SPECS}
MAX_CANDIDATES = OPTIONS["num_candidates"].high  # N at most: the C API's cap (kMaxCandidates)


def _with_option_fields(cls):
    """Gives `cls` one field per option of the table, in its order, with the table's defaults."""
    types = {"count": int, "real": float, "optional_real": float | None}
    cls.__annotations__ = {spec.name: types[spec.kind] for spec in OPTION_SPECS}
    for spec in OPTION_SPECS:
        setattr(cls, spec.name, spec.default)
    cls.__doc__ += "".join(f"\n    {spec.name} = {spec.default}: {spec.help}" for spec in OPTION_SPECS)
    return cls


@dataclass(frozen=True)
@_with_option_fields
class SamplerOptions:
    """Per-plan options of the alternating sampler; every backend honours all of them. The fields,
    their defaults and ranges come from the option table (csrc/include/mpdiffuser/options.def);
    why the defaults are what they are: docs/results.md ("Recipe sweep").
"""

    def __post_init__(self) -> None:
        for spec in OPTION_SPECS:
            spec.check(getattr(self, spec.name))

    def check_for(self, num_steps: int, horizon: int) -> None:
        """The checks that need the model: warm_start_level < K, actions_per_plan <= H."""
        for spec in OPTION_SPECS:
            if spec.bound != "none":
                spec.check(getattr(self, spec.name), num_steps, horizon)

    def dynamics_at(self, k: int) -> bool:
        """Whether the dynamics update runs at denoising step k (1..K); the last step k = 1 always
        qualifies under dynamics_every, so feasibility is corrected right before the output."""
        if self.dynamics_weight == 0.0:
            return False
        if self.dynamics_last and k > self.dynamics_last:
            return False
        return (k - 1) % self.dynamics_every == 0

    def replace(self, **changes) -> "SamplerOptions":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TrainConfig:
    """One training run of one model; shared by all four models."""

    steps: int = 5000  # training steps per model
    batch_size: int = 256  # global batch size, split over torchrun's processes
    learning_rate: float = 3e-4  # AdamW learning rate
    weight_decay: float = 1e-4
    ema_decay: float = 0.995
    grad_clip: float = 1.0
    checkpoint_every: int = 500  # steps between checkpoints (an interrupted run resumes from the last)
    seed: int = 0  # training seed: initialization, batches and condition dropout
    # Planner only: loss weight of the first action u_0 in the window (the one MPC executes);
    # every other element weighs 1. Diffuser's locomotion setting and the authors' (docs/results.md
    # measures it against 1).
    action_weight: float = 10.0
    ema_every: int = 1  # EMA update every this many steps (authors: 10, with decay 0.995)
    # Validation (planner and dynamics): every validate_every steps (0: never), the EMA model's
    # loss on held-out windows, and for the planner the error of windows it samples at
    # temperature 0.25 (the authors' validation). validation_fraction of the episodes is held
    # out of training when it is on.
    validate_every: int = 0
    validation_fraction: float = 0.05

    def __post_init__(self) -> None:
        if self.ema_every < 1:
            raise ValueError(f"ema_every must be >= 1, got {self.ema_every}")
        for name, low in (("steps", 1), ("batch_size", 1), ("checkpoint_every", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if isinstance(self.validate_every, bool) or not isinstance(self.validate_every, int) or self.validate_every < 0:
            raise ValueError(f"validate_every must be an integer >= 0, got {self.validate_every!r}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        for name in ("learning_rate", "action_weight", "grad_clip"):  # NaN and infinity fail here, not in torch
            value = getattr(self, name)
            if not (0.0 < value < float("inf")):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if not (0.0 <= self.weight_decay < float("inf")):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


# TrainConfig fields that one model's loss reads alone (field -> model): the other models' training
# does not depend on them, so a checkpoint of those resumes whatever value they carry.
MODEL_ONLY_TRAIN_FIELDS = {"action_weight": "planner"}

# The names that set a TrainConfig or a ModelConfig field (name -> field): `mpdiffuser train`'s
# flags (their help is the field's comment above, their defaults the config's and the recipe's)
# and mpd.fit's keyword arguments, the same names with the same checks.
TRAIN_FLAGS = {"steps": "steps", "batch_size": "batch_size", "lr": "learning_rate", "seed": "seed",
               "checkpoint_every": "checkpoint_every", "action_weight": "action_weight", "ema_every": "ema_every",
               "validate_every": "validate_every"}
MODEL_FLAGS = {"horizon": "horizon", "diffusion_steps": "num_steps", "width": "width", "layers": "layers",
               "architecture": "architecture", "unet_dim": "unet_dim", "unet_mults": "unet_mults",
               "unet_embed_dim": "unet_embed_dim", "prediction": "prediction", "normalizer": "normalizer",
               "return_condition": "return_condition"}
