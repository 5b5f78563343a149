"""The framings build/tb_framing.py measures the adult TB bundle on: each changes only
what its name says."""

import numpy as np

from build import tb_framing as tf
from models.training.tb import to_working


def _film(h: int = 100, w: int = 80) -> np.ndarray:
    return np.random.default_rng(0).random((h, w)).astype(np.float32)


def test_cut_keeps_the_middle_and_cut_axis_only_its_own_axis() -> None:
    film = _film()
    tight = tf.cut(film, 0.10)
    assert tight.shape == (80, 64) and np.array_equal(tight, film[10:90, 8:72])
    assert np.array_equal(tf.cut_axis(film, 0.10, 0), film[10:90])
    assert np.array_equal(tf.cut_axis(film, 0.10, 1), film[:, 8:72])


def test_blacken_moves_nothing_and_pad_frames_looser() -> None:
    film = _film()
    dark = tf.blacken(film, 0.10)
    assert dark.shape == film.shape
    assert np.array_equal(dark[10:90, 8:72], film[10:90, 8:72])  # the lungs where they were
    assert dark[:10].max() == dark[-10:].max() == dark[:, :8].max() == dark[:, -8:].max() == 0
    loose = tf.pad(film, 0.10)
    assert loose.shape == (120, 96) and np.array_equal(loose[10:110, 8:88], film)
    assert loose[:10].max() == 0


def test_framings_are_working_films_and_the_softened_one_is_not_cut() -> None:
    originals = [_film(512, 512)]
    working = np.stack([to_working(f) for f in originals])
    sets = tf.framings(originals, working, to_working)
    assert all(np.asarray(films).shape == (1, 64, 64) for films in sets.values())
    soft = sets["TB films: softened to 52 px, not cut"][0]
    # softened, not moved: close to the film itself, unlike the film cut 10 % a side
    assert np.abs(soft - working[0]).mean() < np.abs(
        sets["TB films: cut 10 % a side"][0] - working[0]).mean()
