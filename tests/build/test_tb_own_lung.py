"""The 256-px own-lung trial (build/tb_own_lung.py): its batches teach what it says."""

import numpy as np

from build import tb_own_lung as trial


def _film_with_lesion():
    film = np.full((trial.SIZE, trial.SIZE), 0.3, np.float32)
    mask = np.zeros_like(film)
    film[40:90, 150:200] = 0.9  # the "lesion", and the box drawn around it
    mask[40:90, 150:200] = 1.0
    return film, mask


def test_the_box_moves_with_the_film():
    film, mask = _film_with_lesion()
    rng = np.random.default_rng(3)
    for _ in range(20):  # rotations, zooms, shifts and flips, never softened here
        f, k = trial.augment(film, mask, rng, degrade=0.0)
        inside, outside = f[k > 0.5], f[k < 0.5]
        assert inside.mean() > 0.8 and outside.mean() < 0.4


def test_batch_cells_are_lesion_only_inside_a_box_and_nih_films_are_all_negative():
    film, mask = _film_with_lesion()
    tb, masks = np.stack([film, film]), np.stack([mask, mask])
    nih = np.full((3, trial.SIZE, trial.SIZE), 0.5, np.float32)
    x, t = trial.make_batch(tb, masks, np.array([0, 1]), nih, np.array([0, 1, 2]),
                            nih_share=0.25, prep=lambda f: f[None],
                            rng=np.random.default_rng(0), degrade=0.0)
    assert x.shape == (trial.BATCH, 1, trial.SIZE, trial.SIZE)
    assert t.shape == (trial.BATCH, trial.GRID, trial.GRID)
    n_nih = round(trial.BATCH * 0.25)
    assert (t[-n_nih:] == 0).all()
    for cells in t[:-n_nih]:  # every TB film has lesion cells and lung cells
        assert (cells == 1).any() and (cells == 0).any()


def test_the_row_names_its_folds_and_what_it_trained_on():
    assert "TBX11K only" in trial.choice_text(0.0, [0, 1])
    assert "[folds 0,1]" in trial.choice_text(0.0, [0, 1])
    assert "NIH normals as 30%" in trial.choice_text(0.3, [0])
