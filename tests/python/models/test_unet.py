"""The unet family: the authors' temporal U-Net with FiLM, its shape rules, its place in the
registry, training and torch-backend planning, and the model file's refusal of it (the native
backends run the mlp family only, so far)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpdiffuser.config import ModelConfig, SamplerOptions, TrainConfig
from mpdiffuser.models.bundle import BundleSpec, ModelBundle
from mpdiffuser.models.registry import family
from mpdiffuser.models.unet import Downsample, TemporalUnetFiLM, UnetDynamics, UnetPlanner
from mpdiffuser.sampling.reference import ReferenceSampler
from mpdiffuser.training.train import train_model
from tests.python.conftest import make_toy_dataset

TINY_UNET = ModelConfig(horizon=8, num_steps=5, ranker_width=16, ranker_layers=2, architecture="unet", unet_dim=8,
                        unet_mults=(1, 2), unet_embed_dim=8)


def test_shapes_and_the_authors_structure():
    torch.manual_seed(0)
    planner = UnetPlanner(4, 2, 1, horizon=8, dim=8, mults=(1, 2, 4), embed_dim=8)
    tau, x0, cond, k = torch.randn(3, 8, 6), torch.randn(3, 4), torch.randn(3, 1), torch.tensor([1, 3, 5])
    assert planner(tau, x0, cond, k).shape == (3, 8, 6)
    dynamics = UnetDynamics(4, 2, 1, horizon=8, dim=8, mults=(1, 2, 4), embed_dim=8)
    assert dynamics(tau[..., :4], tau[..., 4:], x0, cond, k).shape == (3, 8, 4)
    # Levels (1, 2, 4): two stride-2 convs down, two transposed convs up; the first level's kept
    # output is never used (the authors' up path pairs each level with the one below it).
    unet = planner.unet
    assert [type(level[2]).__name__ for level in unet.down] == ["Downsample", "Downsample", "Identity"]
    assert [up[0].first.conv.in_channels for up in unet.up] == [32 + 32, 16 + 16]
    # The context: time (dim) + x_0 and condition embeddings (embed_dim each).
    assert unet.down[0][0].first.film[0].in_features == 8 + 2 * 8
    # The authors' size (dim 128, mults 1 4 8, embeddings 128) is reachable: about 72M parameters.
    big = TemporalUnetFiLM(14, 14, (11, 1), 16, dim=128, mults=(1, 4, 8), embed_dim=128)
    assert 70e6 < sum(p.numel() for p in big.parameters()) < 74e6


def test_downsample_pads_like_flax_same():
    """Stride-2 conv k3 "SAME": output i reads inputs 2i, 2i+1, 2i+2 with one zero column on the right."""
    down = Downsample(1)
    with torch.no_grad():
        down.conv.weight.copy_(torch.tensor([[[1.0, 10.0, 100.0]]]))
        down.conv.bias.zero_()
    x = torch.arange(1.0, 5.0).view(1, 1, 4)  # 1 2 3 4
    np.testing.assert_allclose(down(x).detach().flatten().numpy(), [1 + 20 + 300, 3 + 40 + 0])


def test_shape_rules_fail_with_the_reason():
    with pytest.raises(ValueError, match="horizon 6 must be divisible by 4"):
        ModelConfig(horizon=6, architecture="unet", unet_mults=(1, 2, 4))
    with pytest.raises(ValueError, match="divisible by 8 \\(GroupNorm groups\\)"):
        ModelConfig(architecture="unet", unet_dim=12)
    with pytest.raises(ValueError, match="at least two levels"):
        ModelConfig(architecture="unet", unet_mults=(1,))
    with pytest.raises(ValueError, match="architecture must be one of mlp, unet"):
        ModelConfig(architecture="transformer")
    assert ModelConfig(horizon=6, unet_mults=(1, 2, 4)).architecture == "mlp"  # the rules bind the unet only
    with pytest.raises(ValueError, match="unknown architecture"):
        family("transformer")


def test_unet_bundle_trains_plans_on_torch_and_refuses_the_model_file(tmp_path):
    data = make_toy_dataset(seed=3)
    spec = BundleSpec.fit(data, [data], TINY_UNET)
    spec.save(tmp_path)
    assert BundleSpec.load(tmp_path).model == TINY_UNET  # the tuple of mults survives JSON
    for name in ("planner", "dynamics", "reward"):
        info = train_model(tmp_path, name, [data], TrainConfig(steps=20, batch_size=16), progress=False)
        assert np.isfinite(info["final_loss"])
    bundle = ModelBundle.load(tmp_path)
    assert isinstance(bundle.planner, UnetPlanner) and isinstance(bundle.dynamics, UnetDynamics)
    plan = ReferenceSampler(bundle).plan(data.episodes[0].observations[0].astype(np.float32), seed=1,
                                         options=SamplerOptions(num_candidates=3))
    assert plan.window.shape == (8, 6) and np.isfinite(plan.action).all() and plan.values.shape == (3,)
    from mpdiffuser.export import export_model

    with pytest.raises(ValueError, match="model files hold the mlp family only; the 'unet' models run on the "
                                         "torch backend"):
        export_model(tmp_path, tmp_path / "model.safetensors")
