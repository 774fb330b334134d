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
