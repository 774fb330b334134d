"""The `unet` network family: the temporal U-Net with FiLM conditioning of the MPDiffuser
authors' code (`TemporalUnetFiLM`), as a 1-D convolutional network over the window's rows.

Structure, for dims d_i = dim * mults[i] (authors' size: dim 128, mults (1, 4, 8)):

    context = [time(k), embed(x_0), embed(c)]     time: sinusoid(dim) -> Linear 4 dim -> SiLU -> Linear dim
                                                  embed: Linear 4 e -> SiLU -> Linear e (e: embed_dim)
    down:   per level i: 2 residual FiLM blocks to d_i, keep the output, then (not on the last)
            a stride-2 conv k3
    middle: 2 residual FiLM blocks at d_last
    up:     per level d in reversed(d_0..d_{n-2}): concatenate the kept output of the level one
            deeper, 2 residual FiLM blocks to d, then a stride-2 transposed conv k4 (length x 2)
    out:    conv k5 -> GroupNorm(8) -> SiLU -> conv k1 to the output channels

    residual FiLM block(x):  h = FiLM(GN(conv_k5(x)));  h = FiLM(GN(conv_k5(h)));
                             SiLU(h + (x, or conv_k1(x) when the width changes))
    FiLM(h) = h * scale + bias, [scale, bias] = Linear(SiLU(Linear(context)))

Quirks of the authors' network kept on purpose: no activation between a block's two convolutions;
the first level's kept output is never used (the up path pairs each level with the one below it and
ends on an upsampling); the scale multiplies directly (not 1 + scale). Padding follows Flax's
"SAME": the stride-2 conv pads one column on the right. H must be divisible by 2^(levels - 1).
Tensors run as [B, channels, H] (PyTorch's Conv1d layout); inputs and outputs are [B, H, channels].
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

GROUPS = 8  # GroupNorm groups, as the authors
GN_EPS = 1e-6  # Flax's GroupNorm epsilon


def sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t: [B] -> [B, dim]: sin then cos of t * 10000^(-j / (dim/2 - 1)), j < dim / 2."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(10000.0) / (half - 1)))
    angles = t.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def two_layer(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.SiLU(), nn.Linear(hidden, out))


class FiLMConv(nn.Module):
    """conv k5 -> GroupNorm -> FiLM from the context; [B, C_in, H] -> [B, C_out, H]."""

    def __init__(self, c_in: int, c_out: int, context: int, kernel: int = 5):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)
        self.norm = nn.GroupNorm(GROUPS, c_out, eps=GN_EPS)
        self.film = two_layer(context, context, 2 * c_out)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.conv(x))
        scale, bias = self.film(context).chunk(2, dim=-1)
        return h * scale[..., None] + bias[..., None]


class ResidualFiLMBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, context: int):
        super().__init__()
        self.first = FiLMConv(c_in, c_out, context)
        self.second = FiLMConv(c_out, c_out, context)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return F.silu(self.second(self.first(x, context), context) + self.skip(x))


class Downsample(nn.Module):
    """Stride-2 conv k3 with Flax "SAME" padding (0 left, 1 right): length L -> L / 2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1)))


class TemporalUnetFiLM(nn.Module):
    """[B, H, in_channels] window, level t [B], conditions -> [B, H, out_channels]."""

    def __init__(self, in_channels: int, out_channels: int, condition_dims: tuple[int, ...], horizon: int,
                 dim: int = 32, mults: tuple[int, ...] = (1, 2, 4), embed_dim: int = 32):
        super().__init__()
        check_unet(horizon, dim, mults)
        self.dim = dim
        self.time = two_layer(dim, 4 * dim, dim)
        self.embeds = nn.ModuleList(two_layer(c, 4 * embed_dim, embed_dim) for c in condition_dims)
        context = dim + embed_dim * len(condition_dims)
        dims = [dim * m for m in mults]
        self.down = nn.ModuleList()
        c = in_channels
        for i, d in enumerate(dims):
            level = nn.ModuleList([ResidualFiLMBlock(c, d, context), ResidualFiLMBlock(d, d, context)])
            level.append(Downsample(d) if i < len(dims) - 1 else nn.Identity())
            self.down.append(level)
            c = d
        self.middle = nn.ModuleList([ResidualFiLMBlock(c, c, context), ResidualFiLMBlock(c, c, context)])
        self.up = nn.ModuleList()
        kept = list(dims)  # the kept outputs, popped from the deepest
        for d in reversed(dims[:-1]):
            skip = kept.pop()
            self.up.append(nn.ModuleList([ResidualFiLMBlock(c + skip, d, context), ResidualFiLMBlock(d, d, context),
                                          nn.ConvTranspose1d(d, d, 4, stride=2, padding=1)]))
            c = d
        self.head = nn.Sequential(nn.Conv1d(c, dim, 5, padding=2), nn.GroupNorm(GROUPS, dim, eps=GN_EPS), nn.SiLU(),
                                  nn.Conv1d(dim, out_channels, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, conditions: list[torch.Tensor]) -> torch.Tensor:
        """x: [B, H, C_in], t: [B] levels (0..K-1), conditions: [B, c_i] each -> [B, H, C_out]."""
        context = torch.cat([self.time(sinusoid(t, self.dim))] + [e(c) for e, c in zip(self.embeds, conditions)],
                            dim=-1)
        h = x.transpose(1, 2)
        kept = []
        for first, second, down in self.down:
            h = second(first(h, context), context)
            kept.append(h)
            h = down(h)
        for block in self.middle:
            h = block(h, context)
        for first, second, upsample in self.up:
            h = torch.cat([h, kept.pop()], dim=1)
            h = upsample(second(first(h, context), context))
        return self.head(h).transpose(1, 2)


def check_unet(horizon: int, dim: int, mults: tuple[int, ...]) -> None:
    """The U-Net's shape rules, with the reason when one fails."""
    if not mults or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mults):
        raise ValueError(f"unet_mults must be positive integers, got {mults!r}")
    if len(mults) < 2:
        raise ValueError("unet_mults needs at least two levels (the up path pairs each level with the one below)")
    if any(dim * m % GROUPS for m in mults):
        raise ValueError(f"unet_dim * each of unet_mults must be divisible by {GROUPS} (GroupNorm groups), got "
                         f"dim {dim}, mults {mults}")
    if horizon % 2 ** (len(mults) - 1):
        raise ValueError(f"the unet halves the window {len(mults) - 1} times: horizon {horizon} must be divisible by "
                         f"{2 ** (len(mults) - 1)}")


class UnetPlanner(nn.Module):
    """The planner on the unet: the window's D = dx + du channels -> its prediction, conditioned on
    x_0 and c (the authors' planner.py)."""

    def __init__(self, state_dim: int, action_dim: int, cond_dim: int, horizon: int, dim: int,
                 mults: tuple[int, ...], embed_dim: int):
        super().__init__()
        self.horizon, self.state_dim, self.action_dim, self.cond_dim = horizon, state_dim, action_dim, cond_dim
        D = state_dim + action_dim
        self.unet = TemporalUnetFiLM(D, D, (state_dim, cond_dim), horizon, dim, mults, embed_dim)

    def forward(self, tau: torch.Tensor, x0: torch.Tensor, cond: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """tau: [B, H, D], x0: [B, dx], cond: [B, c], k: [B] levels 1..K -> [B, H, D]."""
        return self.unet(tau, k - 1, [x0, cond])


class UnetDynamics(nn.Module):
    """The dynamics model on the unet: [states, actions] (dx + du channels) -> the states'
    prediction (dx channels), conditioned on x_0 and c (the authors' dyn_model.py)."""

    def __init__(self, state_dim: int, action_dim: int, cond_dim: int, horizon: int, dim: int,
                 mults: tuple[int, ...], embed_dim: int):
        super().__init__()
        self.horizon, self.state_dim, self.action_dim, self.cond_dim = horizon, state_dim, action_dim, cond_dim
        self.unet = TemporalUnetFiLM(state_dim + action_dim, state_dim, (state_dim, cond_dim), horizon, dim, mults,
                                     embed_dim)

    def forward(self, states: torch.Tensor, actions: torch.Tensor, x0: torch.Tensor, cond: torch.Tensor,
                k: torch.Tensor) -> torch.Tensor:
        """states: [B, H, dx], actions: [B, H, du], x0: [B, dx], cond: [B, c], k: [B] -> [B, H, dx]."""
        return self.unet(torch.cat([states, actions], dim=-1), k - 1, [x0, cond])
