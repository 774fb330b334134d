"""Named training and sampling recipes: what `mpdiffuser train --recipe NAME` starts a bundle with.

"default" is this project's, chosen by measurement on the shared data suite (docs/results.md);
"authors" is the recipe of the MPDiffuser paper's code (design section 3), CDF normalizer
included, with our residual-MLP networks in place of their temporal U-Net.
Explicit command-line flags override a recipe's values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mpdiffuser.config import SamplerOptions, TrainConfig


@dataclass(frozen=True)
class Recipe:
    model: dict = field(default_factory=dict)  # ModelConfig changes for new bundles
    train: TrainConfig = TrainConfig()
    sampler: SamplerOptions = SamplerOptions()  # the defaults stored in the bundle and model file


RECIPES = {
    "default": Recipe(),
    "authors": Recipe(
        model={"num_steps": 100, "prediction": "epsilon", "normalizer": "cdf", "return_condition": "authors",
               "return_discount": 0.997},
        train=TrainConfig(steps=1_000_000, batch_size=64, learning_rate=2e-4, ema_decay=0.995, ema_every=10,
                          action_weight=10.0, checkpoint_every=10_000),
        sampler=SamplerOptions(num_candidates=1, guidance=2.0, dynamics_guidance=2.0, return_target=1.1,
                               temperature=1e-3)),
}


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}, expected one of {', '.join(RECIPES)}")
    return RECIPES[name]
