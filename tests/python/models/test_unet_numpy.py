"""The PyTorch unet (models/unet.py) against an independent NumPy implementation written from
the structure in its docstring with explicit loops: one FiLM convolution, one residual block,
the stride-2 and transposed convolutions, and the whole network, on tiny sizes. NumPy runs in
float64, torch in float32: agreement within 1e-5 relative to the outputs' scale."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mpdiffuser.models.unet import FiLMConv, ResidualFiLMBlock, TemporalUnetFiLM


def p(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy() for k, v in module.state_dict().items()}


def silu(x):
    return x / (1.0 + np.exp(-x))


def linear(w, prefix, x):
    return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]


def two_layer(w, prefix, x):
    return linear(w, prefix + ".2", silu(linear(w, prefix + ".0", x)))


def conv_same(weight, bias, x):
    """x [C_in, L], weight [C_out, C_in, K] (odd K), zero padding K // 2 on each side."""
    c_out, c_in, k = weight.shape
    length = x.shape[1]
    y = np.zeros((c_out, length))
    for o in range(c_out):
        for pos in range(length):
            total = bias[o]
            for i in range(c_in):
                for j in range(k):
                    src = pos + j - k // 2
                    if 0 <= src < length:
                        total += weight[o, i, j] * x[i, src]
            y[o, pos] = total
    return y


def downsample(weight, bias, x):
    """Stride 2, kernel 3, one zero column on the right: y[o, l] = sum x[i, 2l + j] w[o, i, j]."""
    c_out, c_in, _ = weight.shape
    length = x.shape[1]
    y = np.zeros((c_out, length // 2))
    for o in range(c_out):
        for pos in range(length // 2):
            y[o, pos] = bias[o] + sum(weight[o, i, j] * x[i, 2 * pos + j]
                                      for i in range(c_in) for j in range(3) if 2 * pos + j < length)
    return y


def upsample(weight, bias, x):
    """Transposed, kernel 4, stride 2, padding 1 (weight [C_in, C_out, 4]): input l feeds output
    2l + j - 1."""
    c_in, c_out, k = weight.shape
    length = x.shape[1]
    y = np.tile(bias[:, None], (1, 2 * length))
    for i in range(c_in):
        for o in range(c_out):
            for pos in range(length):
                for j in range(k):
                    m = 2 * pos + j - 1
                    if 0 <= m < 2 * length:
                        y[o, m] += x[i, pos] * weight[i, o, j]
    return y


def group_norm(x, gamma, beta, groups=8, eps=1e-6):
    c, length = x.shape
    out = np.empty_like(x)
    per = c // groups
    for g in range(groups):
        block = x[g * per:(g + 1) * per]
        mean, var = block.mean(), ((block - block.mean()) ** 2).mean()
        out[g * per:(g + 1) * per] = (block - mean) / math.sqrt(var + eps)
    return out * gamma[:, None] + beta[:, None]


def film_conv(w, prefix, x, context):
    h = group_norm(conv_same(w[prefix + ".conv.weight"], w[prefix + ".conv.bias"], x),
                   w[prefix + ".norm.weight"], w[prefix + ".norm.bias"])
    scale_shift = two_layer(w, prefix + ".film", context)
    c = h.shape[0]
    return h * scale_shift[:c, None] + scale_shift[c:, None]


def block(w, prefix, x, context):
    h = film_conv(w, prefix + ".second", film_conv(w, prefix + ".first", x, context), context)
    skip = conv_same(w[prefix + ".skip.weight"], w[prefix + ".skip.bias"], x) if prefix + ".skip.weight" in w else x
    return silu(h + skip)


def unet(w, x, t, conditions, dim, levels):
    """x [H, C_in] -> [H, C_out]; conditions: the x_0 and c vectors."""
    half = dim // 2
    freqs = np.exp(np.arange(half) * (-math.log(10000.0) / (half - 1)))
    sinusoid = np.concatenate([np.sin(t * freqs), np.cos(t * freqs)])
    context = np.concatenate([two_layer(w, "time", sinusoid)]
                             + [two_layer(w, f"embeds.{i}", c) for i, c in enumerate(conditions)])
    h, kept = x.T, []
    for i in range(levels):
        h = block(w, f"down.{i}.1", block(w, f"down.{i}.0", h, context), context)
        kept.append(h)
        if i < levels - 1:
            h = downsample(w[f"down.{i}.2.conv.weight"], w[f"down.{i}.2.conv.bias"], h)
    h = block(w, "middle.1", block(w, "middle.0", h, context), context)
    for j in range(levels - 1):
        h = np.concatenate([h, kept.pop()], axis=0)
        h = block(w, f"up.{j}.1", block(w, f"up.{j}.0", h, context), context)
        h = upsample(w[f"up.{j}.2.weight"], w[f"up.{j}.2.bias"], h)
    h = silu(group_norm(conv_same(w["head.0.weight"], w["head.0.bias"], h), w["head.1.weight"], w["head.1.bias"]))
    return conv_same(w["head.3.weight"], w["head.3.bias"], h).T


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Weights of order one everywhere (GroupNorm affines and biases included), so every term counts."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for q in module.parameters():
            q.copy_(torch.randn(q.shape, generator=gen) / math.sqrt(q[0].numel() if q.ndim >= 2 else 1))


def dotted(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """A submodule's weights under the names the NumPy functions read with prefix ''."""
    return {"." + k: v for k, v in p(module).items()}


def close(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    scale = max(1.0, float(np.abs(ours).max()))
    np.testing.assert_allclose(theirs, ours, atol=1e-5 * scale, rtol=0)


def test_one_film_convolution_and_one_block():
    torch.manual_seed(0)
    context = torch.randn(1, 12)
    conv = FiLMConv(8, 16, 12)
    randomize(conv, 1)
    x = torch.randn(1, 8, 6)
    close(conv(x, context)[0].detach().numpy(),
          film_conv(dotted(conv), "", x[0].double().numpy(), context[0].double().numpy()))
    for c_in in (8, 16):  # with and without the k1 skip convolution
        res = ResidualFiLMBlock(c_in, 16, 12)
        randomize(res, 2)
        x = torch.randn(1, c_in, 6)
        close(res(x, context)[0].detach().numpy(),
              block(dotted(res), "", x[0].double().numpy(), context[0].double().numpy()))


def test_strided_convolutions():
    from mpdiffuser.models.unet import Downsample

    torch.manual_seed(3)
    x = torch.randn(1, 8, 8)
    down = Downsample(8)
    close(down(x)[0].detach().numpy(), downsample(p(down.conv)["weight"], p(down.conv)["bias"], x[0].double().numpy()))
    up = torch.nn.ConvTranspose1d(8, 8, 4, stride=2, padding=1)
    close(up(x)[0].detach().numpy(), upsample(p(up)["weight"], p(up)["bias"], x[0].double().numpy()))


@pytest.mark.parametrize("mults, horizon", [((1, 2), 4), ((1, 2, 4), 8)])
def test_the_whole_network(mults, horizon):
    torch.manual_seed(4)
    net = TemporalUnetFiLM(5, 3, (3, 1), horizon, dim=8, mults=mults, embed_dim=8)
    randomize(net, 5)
    x, x0, cond = torch.randn(1, horizon, 5), torch.randn(1, 3), torch.randn(1, 1)
    ours = net(x, torch.tensor([3]), [x0, cond])[0].detach().numpy()
    theirs = unet(p(net), x[0].double().numpy(), 3.0, [x0[0].double().numpy(), cond[0].double().numpy()], 8,
                  len(mults))
    assert theirs.shape == (horizon, 3)
    close(ours, theirs)
