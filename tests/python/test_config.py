"""ModelConfig.sized_for: the default width follows the flattened window's size."""

import pytest

from mpdiffuser.config import ModelConfig
from mpdiffuser.models.bundle import BundleSpec
from tests.python.conftest import make_toy_dataset


@pytest.mark.parametrize("state_dim, action_dim, width", [
    (11, 3, 256),   # Hopper: 16 * 14 = 224 fits in 256
    (12, 4, 256),   # 16 * 16 = 256: still fits
    (13, 4, 512),   # 16 * 17 = 272: does not
    (17, 6, 512),   # Walker2d, HalfCheetah: 368
    (27, 8, 512),   # Ant: 560, capped at 512
])
def test_width_follows_the_window(state_dim, action_dim, width):
    config = ModelConfig.sized_for(state_dim, action_dim)
    assert config.width == width
    assert (config.horizon, config.layers) == (ModelConfig.horizon, ModelConfig.layers)


def test_changes_override_the_sizing():
    assert ModelConfig.sized_for(17, 6, horizon=8).width == 256  # 8 * 23 = 184
    assert ModelConfig.sized_for(11, 3, horizon=32).width == 512  # 32 * 14 = 448
    explicit = ModelConfig.sized_for(17, 6, width=96, layers=2)
    assert (explicit.width, explicit.layers) == (96, 2)
    with pytest.raises(ValueError, match="width"):
        ModelConfig.sized_for(17, 6, width=0)


def test_bundle_fit_sizes_the_model_for_its_data():
    wide = make_toy_dataset(state_dim=17, action_dim=6)
    narrow = make_toy_dataset(state_dim=4, action_dim=2)
    assert BundleSpec.fit(wide, [wide]).model.width == 512
    assert BundleSpec.fit(narrow, [narrow]).model.width == 256
    given = ModelConfig(width=64)
    assert BundleSpec.fit(wide, [wide], given).model == given


def test_a_large_robot_gets_the_unet_with_bf16_weights_and_the_fast_mode(tmp_path):
    """config.LARGE_WINDOW: past it the default family is the U-Net, the bundle stores the fast
    numeric mode as its sampler default and export writes bf16 weights; below it nothing changes,
    and an explicit architecture or weight format wins."""
    from mpdiffuser.config import LARGE_WINDOW, SamplerOptions
    from mpdiffuser.training.bundles import prepare_bundle

    assert ModelConfig.sized_for(348, 17).architecture == "unet"          # 16 * 365 = 5840
    assert ModelConfig.sized_for(27, 8).architecture == "mlp"             # Ant: 560
    assert 16 * (27 + 8) < LARGE_WINDOW < 16 * 365
    assert ModelConfig.sized_for(348, 17, architecture="mlp").architecture == "mlp"
    assert ModelConfig.sized_for(348, 17).large_robot_model(348, 17)
    assert not ModelConfig.sized_for(348, 17, architecture="mlp").large_robot_model(348, 17)
    assert not ModelConfig(architecture="unet").large_robot_model(27, 8)
    big = make_toy_dataset(state_dim=130, action_dim=2)  # 16 * 132 = 2112 > 2048
    prepare_bundle(tmp_path / "big", [big], [], "default", sizes={"unet_dim": 8, "unet_embed_dim": 8})
    spec = BundleSpec.load(tmp_path / "big")
    assert spec.model.architecture == "unet" and spec.sampler_defaults == SamplerOptions(fast_numerics=1)


def test_export_writes_bf16_weights_for_a_large_robots_unet_unless_told(tmp_path):
    from mpdiffuser.bench import synthetic_model_file
    from mpdiffuser.export import _read_verified

    large = ModelConfig.sized_for(130, 2, unet_dim=8, unet_embed_dim=8)
    assert _read_verified(synthetic_model_file(tmp_path / "large.safetensors", 130, 2, model=large, weights=None))[2]
    assert not _read_verified(synthetic_model_file(tmp_path / "told.safetensors", 130, 2, model=large,
                                                   weights="float32"))[2]
    small = ModelConfig.sized_for(27, 8, architecture="unet", unet_dim=8, unet_embed_dim=8)
    assert not _read_verified(synthetic_model_file(tmp_path / "small.safetensors", 27, 8, model=small, weights=None))[2]
