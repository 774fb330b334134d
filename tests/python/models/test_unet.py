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


def test_unet_bundle_trains_exports_and_plans_on_torch(tmp_path):
    """A unet bundle trains, plans on the torch backend, and exports to a model file that both
    readers validate tensor by tensor (the C++ reader lists the names and shapes itself, so its
    acceptance checks core/unet_layout.cpp against the PyTorch module); the torch backend plans
    the file as the bundle; the CUDA backend refuses it with the reason."""
    from safetensors import safe_open

    from mpdiffuser import _core
    from mpdiffuser.export import _write_model_file, bundle_from_model_file, export_model, read_model_file
    from mpdiffuser.sampling.sampler import Sampler

    data = make_toy_dataset(seed=3)
    spec = BundleSpec.fit(data, [data], TINY_UNET)
    spec.save(tmp_path)
    assert BundleSpec.load(tmp_path).model == TINY_UNET  # the tuple of mults survives JSON
    for name in ("planner", "dynamics", "reward"):
        info = train_model(tmp_path, name, [data], TrainConfig(steps=20, batch_size=16), progress=False)
        assert np.isfinite(info["final_loss"])
    bundle = ModelBundle.load(tmp_path)
    assert isinstance(bundle.planner, UnetPlanner) and isinstance(bundle.dynamics, UnetDynamics)
    state = data.episodes[0].observations[0].astype(np.float32)
    options = SamplerOptions(num_candidates=3)
    reference = ReferenceSampler(bundle).plan(state, seed=1, options=options)
    assert reference.window.shape == (8, 6) and np.isfinite(reference.action).all()

    path = export_model(tmp_path, tmp_path / "model.safetensors")
    file_spec, tensors, _ = read_model_file(path)
    assert file_spec.model == TINY_UNET
    assert "planner.down.0.0.first.conv.weight" in tensors and "dynamics.head.3.weight" in tensors
    native = _core.Model(str(path))  # the C++ reader accepts every name and shape
    assert native.info()["architecture"] == "unet"
    if not _core.cuda_device_available():  # the CUDA backend plans the unet family (tests/cpp/cuda_plan_test.cpp)
        with pytest.raises(RuntimeError, match="backend 'cuda'"):
            Sampler(path, "cuda")
    from_file = Sampler(path, "torch").plan(state, seed=1, options=options)
    np.testing.assert_array_equal(from_file.window, reference.window)  # the same weights, bit for bit
    assert from_file.index == reference.index

    with safe_open(str(path), framework="numpy") as f:
        meta = dict(f.metadata())
        stored = {k: f.get_tensor(k) for k in f.keys()}
    broken = {
        "missing": ({k: v for k, v in stored.items() if k != "planner.up.0.2.weight"}, meta,
                    "planner.up.0.2.weight"),
        "shape": (stored | {"dynamics.head.3.weight": np.zeros((5, 8, 1), np.float32)}, meta, "head.3.weight"),
        "mults": (stored, meta | {"unet_mults": "1,x"}, "unet_mults"),
        "levels": (stored, meta | {"unet_mults": "1,2,4,8,16"}, "divisible by 16"),
    }
    for tag, (tensors_, meta_, reason) in broken.items():
        bad = tmp_path / f"bad-{tag}.safetensors"
        _write_model_file(tensors_, meta_, bad)  # a valid digest: the checks behind it are tested
        with pytest.raises(ValueError, match=reason):
            bundle_from_model_file(bad)
        with pytest.raises(ValueError, match=reason):
            _core.Model(str(bad))


@pytest.mark.parametrize("lam, guidance, prediction", [(1.0, 2.0, "sample"), (0.5, 1.0, "epsilon"), (0.0, 2.0, "sample")])
def test_cpu_backend_plans_unet_files_as_the_reference(tmp_path, lam, guidance, prediction):
    """The native CPU backend's unet against the PyTorch reference on the same file and noise:
    windows within float32 rounding (max abs error 2e-4 after K = 5 steps of both models), the
    same chosen candidate; bit-identical across thread counts and repeats."""
    from mpdiffuser.export import export_model
    from mpdiffuser.sampling.sampler import Sampler

    data = make_toy_dataset(seed=4)
    config = ModelConfig(**{**TINY_UNET.__dict__, "prediction": prediction, "unet_mults": (1, 2, 4)})
    BundleSpec.fit(data, [data], config).save(tmp_path)
    for name in ("planner", "dynamics", "reward"):
        train_model(tmp_path, name, [data], TrainConfig(steps=30, batch_size=16, learning_rate=1e-2), progress=False)
    path = export_model(tmp_path, tmp_path / "model.safetensors")
    options = SamplerOptions(num_candidates=5, dynamics_weight=lam, guidance=guidance, dynamics_guidance=guidance)
    state = data.episodes[2].observations[3].astype(np.float32)
    reference = Sampler(path, "torch").plan(state, seed=7, options=options)
    cpu = Sampler(path, "cpu", threads=2).plan(state, seed=7, options=options)
    assert np.abs(cpu.windows - reference.windows).max() < 2e-4
    assert cpu.index == reference.index
    one = Sampler(path, "cpu", threads=1)
    again = one.plan(state, seed=7, options=options)
    np.testing.assert_array_equal(again.windows, cpu.windows)
    np.testing.assert_array_equal(one.plan(state, seed=7, options=options).windows, again.windows)


def test_flop_counts_of_each_family():
    """The registry counts a family's FLOPs on a forward pass: for the mlp it equals the closed
    form the benchmark always used; a convolution counts 2 in k per output element."""
    from torch import nn

    from mpdiffuser.models.registry import module_flops

    m = ModelConfig()
    planner, dynamics = family("mlp").flops_per_row(11, 3, 1, m)
    window = 16 * 14
    dims = [window + 11 + 1 + 32, 256, 256, 256, window]
    assert planner == sum(2.0 * a * b for a, b in zip(dims[:-1], dims[1:]))
    assert dynamics < planner  # its output is the states only
    assert module_flops(nn.Conv1d(2, 3, 5, padding=2), torch.zeros(1, 2, 4)) == 2 * 2 * 5 * 3 * 4
    assert module_flops(nn.ConvTranspose1d(3, 2, 4, stride=2, padding=1), torch.zeros(1, 3, 4)) == 2 * 2 * 4 * 3 * 4
    unet_planner, _ = family("unet").flops_per_row(11, 3, 1, ModelConfig(architecture="unet"))
    assert 5e6 < unet_planner < 2e7  # the default unet: about 10 MFLOP per row, 40x the mlp


# Sizes the native unet is checked over: (dim, mults, H, with a cost model). Every size plans
# N = 1 and 7 at (lambda, w) in {0, 1} x {1, 2}, and N = 64 once.
NATIVE_SIZES = [(8, (1, 2), 8, False), (16, (1, 2, 4), 16, True), (32, (1, 2, 4), 32, False),
                (32, (1, 2), 16, True), (16, (1, 2), 32, False), (8, (1, 2, 4), 8, True)]


@pytest.mark.parametrize("dim, mults, horizon, with_cost", NATIVE_SIZES)
def test_native_unet_equals_the_reference_over_sizes(tmp_path, dim, mults, horizon, with_cost):
    """Random-weight unet files (K = 5) on the native CPU backend against the PyTorch reference,
    same file and noise: windows within 1e-3 absolute (float32, about 30 layers of accumulated
    rounding; values of order 1), values within 1e-4 relative, the same chosen candidate unless
    random weights tie two within that tolerance. Rows are independent: the first 7
    of N = 64 candidates equal the N = 7 plan bit for bit, and 1 thread equals 2."""
    from mpdiffuser.bench import synthetic_model_file
    from mpdiffuser.sampling.sampler import Sampler

    config = ModelConfig(horizon=horizon, num_steps=5, architecture="unet", unet_dim=dim, unet_mults=mults,
                         unet_embed_dim=dim)
    path = synthetic_model_file(tmp_path / "unet.safetensors", model=config, with_cost=with_cost, seed=dim + horizon)
    torch_sampler, one, two = Sampler(path, "torch"), Sampler(path, "cpu", threads=1), Sampler(path, "cpu", threads=2)
    state = np.random.default_rng(horizon).uniform(-1, 1, 11).astype(np.float32)
    worst = 0.0
    for n, lam, w in [(1, 0.0, 1.0), (1, 1.0, 2.0), (7, 1.0, 1.0), (7, 0.0, 2.0), (7, 1.0, 2.0), (64, 1.0, 2.0)]:
        options = one.defaults.replace(num_candidates=n, dynamics_weight=lam, guidance=w, dynamics_guidance=w,
                                       temperature=1.0)
        reference = torch_sampler.plan(state, seed=3, options=options)
        cpu = two.plan(state, seed=3, options=options)
        worst = max(worst, float(np.abs(cpu.windows - reference.windows).max()))
        np.testing.assert_allclose(cpu.values, reference.values, rtol=1e-4, atol=1e-4)
        best = reference.values.max()
        assert cpu.index == reference.index or reference.values[cpu.index] >= best - 1e-4 * abs(best), (n, lam, w)
        np.testing.assert_array_equal(one.plan(state, seed=3, options=options).windows, cpu.windows)
        if n == 64:
            few = two.plan(state, seed=3, options=options.replace(num_candidates=7))
            np.testing.assert_array_equal(cpu.windows[:7], few.windows)
    print(f"max |cpu - reference| {worst:.2e}")
    assert worst < 1e-3, worst
