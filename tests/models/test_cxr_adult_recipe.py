"""The adult chest recipe takes its training from the choice it is given
(models/training/cxr_adult_choices.py): what build/pipeline.py trains is the row the
shortcut table measured."""

from __future__ import annotations

import torch

from models.training.cxr_adult import CxrAdultRecipe, variant
from models.training.cxr_adult_choices import SHIPPED, VARIANTS


def test_the_shipped_recipe_trains_as_long_as_its_measured_row() -> None:
    recipe = CxrAdultRecipe()
    assert recipe.choice == VARIANTS[SHIPPED]
    assert recipe.train_config.epochs == VARIANTS[SHIPPED].epochs == 84
    # the rows measured before 2.2.0 keep the length they were measured at
    assert variant("equalised+mixing+boxes+children+peak").train_config.epochs == 14


def test_a_pneumonia_head_variant_has_a_third_output_the_shipped_one_two() -> None:
    x = torch.zeros(2, 1, 64, 64)
    with_head = variant("shipped + children's pneumonia head").build_model().eval()
    assert with_head(x)[0].shape == (2, 3)
    assert CxrAdultRecipe().build_model().eval()(x)[0].shape == (2, 2)
    assert CxrAdultRecipe().serving_heads == [0]  # only the TB head is ever served
