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


def test_a_wider_variant_builds_the_widths_it_names() -> None:
    wide = variant("shipped, 1.5x wider").build_model()
    assert wide.classifier.in_channels == 192
    narrow = variant("shipped, trained 6x longer").build_model()  # 2.2.0's width
    assert narrow.classifier.in_channels == 128
    assert CxrAdultRecipe().build_model().classifier.in_channels == 192  # since 2.3.0


def test_the_report_split_checks_hold_only_films_no_member_trained_on() -> None:
    """``shortcut_sets(fold=None)`` (tb_bundle_members --folds report): the report
    split's TB films and NIH normals, none of them in any pool fold."""
    import numpy as np

    from models.training.cxr_adult import load_sources
    from models.training.data import DEFAULT_DATA_ROOT

    recipe = CxrAdultRecipe()
    s = load_sources(DEFAULT_DATA_ROOT, lambda *_: None)
    split = recipe.splits(s)
    report = recipe.shortcut_sets(s, fold=None, seed=0)
    assert len(report["tb"]) == split["tb_report"].sum() == 107
    assert len(report["nih_normal"]) == (split["nih_report"] & (s.nih_y == 0)).sum()
    pool = recipe.shortcut_sets(s, fold=0, seed=0)["tb"].reshape(-1, 64 * 64)
    assert len(pool) == (~split["tb_report"] & (split["tb_folds"] == 0)).sum()
    # no report film is a pool fold's film (compared pixel for pixel)
    assert not (np.abs(report["tb"].reshape(-1, 1, 64 * 64) - pool[None]).max(-1) < 1e-6).any()
