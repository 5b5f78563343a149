"""Lesion mixing for the adult TB recipe (models/training/tb.py): pure numpy on 64-px
films, checked on real TBX11K-shaped boxes and real films from tests/data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from appliance.inference.preprocess import squash
from models.training.augment import _affine, augment_radiograph_with_mask, vendor_processing
from models.training.tb import (
    NIH_ABNORMAL,
    NIH_NORMAL,
    TB,
    TB_HEAD,
    MixedBatches,
    Mixing,
    box_mask,
    cell_targets,
    lesion_free_donor,
    parse_boxes,
    paste,
    remove_lesions,
)
from models.training.train import cell_loss


def test_boxes_are_parsed_as_fractions_of_the_film() -> None:
    boxes = parse_boxes(
        "ActiveTuberculosis:256,128,384,256;ObsoletePulmonaryTuberculosis:0,0,64,64"
    )
    np.testing.assert_allclose(boxes, [[0.5, 0.25, 0.75, 0.5], [0, 0, 0.125, 0.125]])
    assert parse_boxes("").shape == (0, 4)
    mask = box_mask(boxes[:1])
    assert mask.sum() == 16 * 16 and mask[16:32, 32:48].all()


def test_paste_changes_only_the_region_and_matches_its_brightness() -> None:
    rng = np.random.default_rng(0)
    dest = rng.uniform(0.2, 0.4, (64, 64)).astype(np.float32)
    src = rng.uniform(0.7, 1.0, (64, 64)).astype(np.float32)
    mask = box_mask(np.array([[0.25, 0.25, 0.5, 0.5]]))
    out = paste(dest, src, mask)
    far = np.ones_like(mask, bool)
    far[12:36, 12:36] = False  # the box and its feathered edge
    np.testing.assert_array_equal(out[far], dest[far])
    inside = mask > 0.5
    # the patch's texture comes from src, its level from dest: no brightness step
    assert abs(out[inside].mean() - dest[inside].mean()) < 0.03
    assert np.corrcoef(out[20:28, 20:28].ravel(), src[20:28, 20:28].ravel())[0, 1] > 0.9


def test_a_pasted_lesion_keeps_its_opacity_over_the_new_lung() -> None:
    """Matched on the ring around the box: a lesion brighter than its lung stays brighter
    (matching inside the box would make the opacity vanish)."""
    rng = np.random.default_rng(5)
    src = rng.uniform(0.30, 0.35, (64, 64)).astype(np.float32)
    src[20:30, 20:30] += 0.4  # the opacity
    dest = rng.uniform(0.10, 0.15, (64, 64)).astype(np.float32)
    mask = box_mask(np.array([[20 / 64, 20 / 64, 30 / 64, 30 / 64]]))
    out = paste(dest, src, mask)
    assert out[22:28, 22:28].mean() > dest.mean() + 0.3


def test_a_donor_never_has_a_box_where_it_gives_tissue() -> None:
    masks = np.stack([box_mask(np.array([[x, 0.1, x + 0.2, 0.3]])) for x in (0.0, 0.1, 0.6)])
    region = masks[0]
    rng = np.random.default_rng(1)
    picks = {lesion_free_donor(masks, np.array([1, 2]), region, rng) for _ in range(20)}
    assert picks == {2}  # film 1's box overlaps film 0's
    assert lesion_free_donor(masks, np.array([1]), region, rng) is None


def test_removed_lesions_are_gone_and_the_rest_of_the_film_stays() -> None:
    rng = np.random.default_rng(2)
    films = rng.uniform(0, 0.3, (3, 64, 64)).astype(np.float32)
    films[0, 10:20, 10:20] = 1.0  # film 0's "lesion", inside its box
    masks = np.stack([box_mask(np.array(b)) for b in ([[0.12, 0.12, 0.34, 0.34]],
                                                      [[0.6, 0.6, 0.9, 0.9]],
                                                      [[0.6, 0.1, 0.9, 0.3]])])
    removed, which = remove_lesions(films, masks, 0.02, rng)
    assert 0 in which
    film0 = removed[list(which).index(0)]
    assert film0[10:20, 10:20].mean() < 0.5
    np.testing.assert_array_equal(film0[40:, 40:], films[0, 40:, 40:])


def test_batches_give_both_labels_to_both_hospitals() -> None:
    """Mixed batches: TB films also as negatives (lesions removed), NIH normals also as
    positives (lesion pasted), every positive with its box as the attention target."""
    rng = np.random.default_rng(3)
    n_tb, n_nn = 24, 24
    films = rng.uniform(0, 1, (n_tb + n_nn, 64, 64)).astype(np.float32)
    kind = np.array([TB] * n_tb + [NIH_NORMAL] * n_nn)
    boxes = [np.array([[rng.uniform(0, 0.6), rng.uniform(0, 0.6), 0, 0]]) for _ in range(n_tb)]
    masks = np.concatenate([np.stack([box_mask(b + [0, 0, b[0, 0] + 0.3, b[0, 1] + 0.3])
                                      for b in boxes]),
                            np.zeros((n_nn, 64, 64), np.float32)])
    batches = MixedBatches(films, kind, masks, lambda f: f[None].astype(np.float32),
                           augment_radiograph_with_mask, Mixing(abnormal_head=0), cam_size=8)
    seen = {(k, y) for _ in range(20)
            for k, y in zip(*_kinds_and_labels(batches, np.arange(len(films)), rng),
                            strict=True)}
    assert seen == {(TB, 1.0), (TB, 0.0), (NIH_NORMAL, 1.0), (NIH_NORMAL, 0.0)}
    x, y, head, cam_masks, source = batches(np.arange(len(films)), rng)
    assert set(source) == {0, 1}
    assert x.shape == (48, 1, 64, 64) and cam_masks.shape == (48, 8, 8)
    assert (head == TB_HEAD).all()
    assert (cam_masks[y == 0].sum(axis=(1, 2)) == 0).all()  # no box on a negative
    assert (cam_masks[y == 1].sum(axis=(1, 2)) > 0).all()


def _kinds_and_labels(batches: MixedBatches, idx: np.ndarray, rng) -> tuple:
    _, y, *_ = batches(idx, rng)
    return batches.kind[idx], y


@pytest.mark.parametrize("seed", [0, 1])
def test_augmentation_moves_the_box_with_the_film(seed: int) -> None:
    film = np.zeros((64, 64), np.float32)
    film[20:30, 30:40] = 1.0
    mask = (film > 0).astype(np.float32)
    out, moved = augment_radiograph_with_mask(film, np.random.default_rng(seed), mask)
    assert moved is not None and moved.sum() > 30
    # the bright square went where the mask went
    assert out[moved > 0.9].mean() > out[moved < 0.01].mean() + 0.3


def _scales(isotropic: bool, seeds: int = 200) -> np.ndarray:
    """x and y scale of :func:`_affine` (no rotation), read off a centred square's box."""
    square = np.zeros((128, 128), np.float32)
    square[44:84, 44:84] = 1.0
    out = []
    for seed in range(seeds):
        moved, _ = _affine(square, np.random.default_rng(seed), 0, (0.8, 1.35), 0.0,
                           isotropic=isotropic)
        ys, xs = np.nonzero(moved > 0.5)
        out.append(((xs.max() - xs.min() + 1) / 40, (ys.max() - ys.min() + 1) / 40))
    return np.array(out)


def test_isotropic_zoom_scales_both_axes_alike_and_reaches_the_range_ends() -> None:
    """A film collimated tight on every side: one scale for both axes (session 20), so
    both are beyond 1.2 as often as the range says, not only when two draws agree."""
    iso, each = _scales(True), _scales(False)
    assert np.abs(iso[:, 0] / iso[:, 1] - 1).max() < 0.09  # 5 % apart, plus a pixel
    assert np.abs(each[:, 0] / each[:, 1] - 1).max() > 0.2  # the default draws each axis
    both_tight = lambda s: float(np.mean((s > 1.2).all(axis=1)))  # noqa: E731
    assert both_tight(iso) > 0.25 and both_tight(each) < 0.6 * both_tight(iso)


def test_cell_targets_are_lesion_inside_a_box_unjudged_on_its_edge_and_lung_elsewhere():
    """3.0.0's per-cell targets on a 16x16 map of a 128-px film."""
    mask = box_mask(np.array([[0.25, 0.25, 0.5, 0.5]]), 128)
    t = cell_targets(mask, 16)
    assert t.shape == (16, 16) and set(np.unique(t)) == {-1.0, 0.0, 1.0}
    assert (t[4:8, 4:8] == 1).all() and (t[4:8, 4:8] == 1).sum() == (t == 1).sum()
    assert (t[3, 4:8] == -1).all() and (t[8, 4:8] == -1).all()  # the box's edge
    assert (t[12:, :] == 0).all() and (t[:, 12:] == 0).all()  # lung far from any box
    assert (cell_targets(np.zeros((128, 128), np.float32), 16) == 0).all()


def test_the_cell_loss_judges_only_judged_cells_and_weighs_lesions():
    cam = torch.zeros((1, 2, 2), requires_grad=True)
    targets = torch.tensor([[[1.0, 0.0], [-1.0, -1.0]]])
    loss = cell_loss(cam, targets, pos_weight=4.0)
    loss.backward()
    assert abs(loss.item() - float(np.log(2))) < 1e-6  # every judged cell at p = 0.5
    grad = cam.grad[0]
    assert grad[1, 0] == 0 and grad[1, 1] == 0  # unjudged cells teach nothing
    assert abs(float(grad[0, 0]) / float(grad[0, 1])) == pytest.approx(4.0)
    nothing = cell_loss(cam, torch.full((1, 2, 2), -1.0), pos_weight=4.0)
    assert nothing.item() == 0.0


def test_cell_batches_degrade_films_and_judge_only_the_tb_task() -> None:
    """With cells, the masks are per-cell targets (another task's film: nothing judged);
    with degrade 1, every film reaches the model at 64-px detail."""
    rng = np.random.default_rng(4)
    films = rng.uniform(0, 1, (8, 128, 128)).astype(np.float32)
    kind = np.array([TB] * 4 + [NIH_NORMAL] * 2 + [NIH_ABNORMAL] * 2)
    masks = np.concatenate([np.stack([box_mask(np.array([[0.2, 0.2, 0.5, 0.5]]), 128)] * 4),
                            np.zeros((4, 128, 128), np.float32)])
    identity = lambda f, rng, m: (f, m)  # noqa: E731 - no augmentation: see the detail
    batches = MixedBatches(films, kind, masks, lambda f: f[None].astype(np.float32), identity,
                           Mixing(remove_lesions=0, paste_lesion=0, paste_tissue=0,
                                  abnormal_head=0, degrade=1.0), cam_size=16, cells=True)
    x, y, head, targets, _ = batches(np.arange(8), rng)
    assert targets.shape == (8, 16, 16)
    assert (targets[head != TB_HEAD] == -1).all()
    assert ((targets[:4] == 1).sum(axis=(1, 2)) > 0).all() and (targets[4:6] == 0).all()
    # 64-px detail: each film is itself squashed to 64 px and back, not the sharp film
    soft = np.stack([squash(squash(f, 64), 128) for f in films])
    np.testing.assert_allclose(x[:, 0], soft, atol=1e-6)
    assert np.abs(x[:, 0] - films).mean() > 0.05


def test_other_disease_films_are_tb_negatives_of_the_nih_hospital() -> None:
    """A variant's negatives (cxr_adult ``other_disease_share``): NIH films whose every
    finding TB does not explain alone; a film that may be TB (infiltration, effusion...)
    never becomes one."""
    from models.training.tb import NIH_OTHER_DISEASE, SOURCE_OF, other_disease

    assert other_disease("Cardiomegaly") and other_disease("Emphysema|Pneumothorax")
    for maybe_tb in ("No Finding", "Infiltration", "Cardiomegaly|Effusion",
                     "Atelectasis|Consolidation", "Fibrosis", "Mass|Edema"):
        assert not other_disease(maybe_tb), maybe_tb
    rng = np.random.default_rng(5)
    films = rng.uniform(0, 1, (8, 64, 64)).astype(np.float32)
    kind = np.array([NIH_OTHER_DISEASE] * 8)
    batches = MixedBatches(films, kind, np.zeros((8, 64, 64), np.float32),
                           lambda f: f[None].astype(np.float32),
                           augment_radiograph_with_mask, Mixing(), cam_size=8)
    _, y, head, cam_masks, source = batches(np.arange(8), rng)
    assert (y == 0).all() and (head == TB_HEAD).all() and not cam_masks.any()
    assert set(source) == {SOURCE_OF[NIH_NORMAL]}


def test_vendor_processing_flattens_the_shading_and_sharpens_the_fine_structure() -> None:
    """augment.vendor_processing, a hospital's look that is not TB: the large-scale
    difference (a dark half against a bright one) shrinks, fine texture grows."""
    rng = np.random.default_rng(3)
    film = np.where(np.arange(64)[None, :] < 32, 0.3, 0.7).astype(np.float32)
    film = np.repeat(film, 64, 0) + rng.normal(0, 0.02, (64, 64)).astype(np.float32)
    flat = vendor_processing(film, flatten=0.6, enhance=0.0)
    assert flat[:, 40:].mean() - flat[:, :24].mean() < 0.75 * (
        film[:, 40:].mean() - film[:, :24].mean())
    sharp = vendor_processing(film, flatten=0.0, enhance=1.0)
    fine = lambda f: float(np.std(f[:, 40:] - f[:, 40:].mean()))  # noqa: E731
    assert fine(sharp) > 1.5 * fine(film)
    assert vendor_processing(film, 0.0, 0.0) == pytest.approx(np.clip(film, 0, 1), abs=1e-6)


def test_childrens_pneumonia_teaches_its_own_head_never_the_tb_head() -> None:
    """A variant's third head (cxr_adult ``pneumonia_share``): Kermany's pneumonia films
    are positives of the pneumonia head only; a share of children's normals are its
    negatives, the rest TB negatives as before."""
    from models.training.tb import CHILD_PNEUMONIA, OTHER_NORMAL, PNEUMONIA_HEAD, SOURCE_OF

    rng = np.random.default_rng(11)
    films = rng.uniform(0, 1, (200, 64, 64)).astype(np.float32)
    kind = np.array([CHILD_PNEUMONIA] * 100 + [OTHER_NORMAL] * 100)
    batches = MixedBatches(films, kind, np.zeros((200, 64, 64), np.float32),
                           lambda f: f[None].astype(np.float32), augment_radiograph_with_mask,
                           Mixing(pneumonia_head=0.4), cam_size=8)
    _, y, head, cam_masks, source = batches(np.arange(200), rng)
    assert (head[:100] == PNEUMONIA_HEAD).all() and (y[:100] == 1).all()
    assert (y[100:] == 0).all() and set(head[100:]) == {TB_HEAD, PNEUMONIA_HEAD}
    assert 20 <= (head[100:] == PNEUMONIA_HEAD).sum() <= 60  # about 0.4 of 100
    assert not cam_masks.any() and set(source) == {SOURCE_OF[OTHER_NORMAL]}
    shipped = MixedBatches(films[100:], kind[100:], np.zeros((100, 64, 64), np.float32),
                           lambda f: f[None].astype(np.float32), augment_radiograph_with_mask,
                           Mixing(), cam_size=8)
    assert (shipped(np.arange(100), rng)[2] == TB_HEAD).all()  # no third head by default


def test_childrens_normals_get_lesions_only_when_the_variant_asks() -> None:
    """``Mixing.paste_on_children`` (a session-18 variant, not shipped): children's
    normals become TB positives with a pasted box as NIH normals do; by default they
    stay negatives without a mark."""
    from models.training.tb import OTHER_NORMAL

    rng = np.random.default_rng(5)
    n_tb, n_kid = 24, 24
    films = rng.uniform(0, 1, (n_tb + n_kid, 64, 64)).astype(np.float32)
    kind = np.array([TB] * n_tb + [OTHER_NORMAL] * n_kid)
    masks = np.concatenate([np.stack([box_mask(np.array([[0.1 + 0.02 * i, 0.2, 0.4, 0.5]]))
                                      for i in range(n_tb)]),
                            np.zeros((n_kid, 64, 64), np.float32)])

    def kid_labels(mixing: Mixing) -> set:
        batches = MixedBatches(films, kind, masks, lambda f: f[None].astype(np.float32),
                               augment_radiograph_with_mask, mixing, cam_size=8)
        out = set()
        for _ in range(10):
            _, y, _, cam_masks, _ = batches(np.arange(len(films)), rng)
            out |= {(float(t), bool(m.any())) for t, m in zip(y[n_tb:], cam_masks[n_tb:],
                                                             strict=True)}
        return out

    assert kid_labels(Mixing()) == {(0.0, False)}
    assert kid_labels(Mixing(paste_on_children=True)) == {(0.0, False), (1.0, True)}
