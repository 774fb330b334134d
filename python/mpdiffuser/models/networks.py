"""The networks of design section 3: one residual MLP serves planner, dynamics and ranker.

    h = SiLU(W_0 v + b_0);  h = h + SiLU(W_l h + b_l) for l = 1..L-1;  out = W_L h + b_L

Parameter names are ``net.<l>.weight`` / ``net.<l>.bias`` ([out, in], row-major), so export maps
them one to one onto ``<model>.<l>.weight`` in the model file.
"""

from __future__ import annotations

import math

import torch
from torch import nn

EMBED_DIM = 32


class ResidualMLP(nn.Module):
    """in_dim -> width (L hidden layers, residual after the first) -> out_dim."""

    def __init__(self, in_dim: int, width: int, layers: int, out_dim: int):
        super().__init__()
        dims = [in_dim] + [width] * layers + [out_dim]
        self.net = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        nn.init.zeros_(self.net[-1].weight)  # start as a zero predictor: stable early training
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """v: [B, in_dim] -> [B, out_dim]."""
        h = nn.functional.silu(self.net[0](v))
        for layer in self.net[1:-1]:
            h = h + nn.functional.silu(layer(h))
        return self.net[-1](h)


def step_embedding(k: torch.Tensor) -> torch.Tensor:
    """k: [B] denoising steps (1..K) -> [B, 32]: sin(k f_j) then cos(k f_j), f_j = 10000^(-j/16)."""
    j = torch.arange(16, dtype=torch.float32, device=k.device)
    freqs = torch.exp(-math.log(10000.0) * j / 16)
    angles = k.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class PlannerDenoiser(nn.Module):
    """eps_theta([flatten(tau^k), x_0, c, emb(k)]) -> [B, H*D]; tau is H rows of [x_{t+1}, u_t]."""

    def __init__(self, state_dim: int, action_dim: int, cond_dim: int, horizon: int, width: int, layers: int):
        super().__init__()
        self.horizon, self.state_dim, self.action_dim, self.cond_dim = horizon, state_dim, action_dim, cond_dim
        window = horizon * (state_dim + action_dim)
        self.mlp = ResidualMLP(window + state_dim + cond_dim + EMBED_DIM, width, layers, window)

    def forward(self, tau: torch.Tensor, x0: torch.Tensor, cond: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """tau: [B, H, D], x0: [B, dx], cond: [B, c], k: [B] -> predicted noise [B, H, D]."""
        v = torch.cat([tau.flatten(1), x0, cond, step_embedding(k)], dim=1)
        return self.mlp(v).view_as(tau)


class DynamicsDenoiser(nn.Module):
    """eps_phi([flatten(X^k), flatten(U^k), x_0, c, emb(k)]) -> [B, H*dx]: the states' noise."""

    def __init__(self, state_dim: int, action_dim: int, cond_dim: int, horizon: int, width: int, layers: int):
        super().__init__()
        self.horizon, self.state_dim, self.action_dim, self.cond_dim = horizon, state_dim, action_dim, cond_dim
        in_dim = horizon * (state_dim + action_dim) + state_dim + cond_dim + EMBED_DIM
        self.mlp = ResidualMLP(in_dim, width, layers, horizon * state_dim)

    def forward(self, states: torch.Tensor, actions: torch.Tensor, x0: torch.Tensor, cond: torch.Tensor,
                k: torch.Tensor) -> torch.Tensor:
        """states: [B, H, dx], actions: [B, H, du], x0: [B, dx], cond: [B, c], k: [B] -> [B, H, dx]."""
        v = torch.cat([states.flatten(1), actions.flatten(1), x0, cond, step_embedding(k)], dim=1)
        return self.mlp(v).view_as(states)


class StepModel(nn.Module):
    """r_psi(x_t, u_t) or kappa_psi(x_t, u_t): [x_t, u_t] -> [B, outputs].

    The reward model has 2 outputs (reward, termination logit) for robots that can fall, else 1;
    the cost model has 1.
    """

    def __init__(self, state_dim: int, action_dim: int, width: int, layers: int, outputs: int):
        super().__init__()
        self.outputs = outputs
        self.mlp = ResidualMLP(state_dim + action_dim, width, layers, outputs)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """x: [..., dx], u: [..., du] -> [..., outputs]."""
        lead = x.shape[:-1]
        out = self.mlp(torch.cat([x, u], dim=-1).reshape(-1, x.shape[-1] + u.shape[-1]))
        return out.reshape(*lead, self.outputs)
