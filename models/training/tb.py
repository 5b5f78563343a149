"""Adult TB films with radiologists' boxes, and lesion mixing (off-box, training only).

TBX11K gives 600 TB films and no TB-negative film from the same hospitals; the adult
negatives come from NIH (another country, another processing). A network shown "TBX11K
film = TB, NIH film = not TB" can learn the hospital. The boxes let us take that
answer away: at the same place in the chest,

- an NIH normal film with a TB box's content pasted in is **TB** (lesion on the other
  source's film), and the same film with TBX11K tissue from *outside* any box pasted at
  such a place is **not TB** (same seam, same foreign texture, no lesion);
- a TBX11K film whose boxes are filled with another TBX11K film's lesion-free tissue is
  **not TB** (the TB source's film, processing and patient, lesion gone).

Each source's films then appear with both labels, with and without foreign patches,
and only the lesion decides. All of it works on 64-px films already on one intensity
scale (:func:`appliance.inference.preprocess.equalise`), the resolution every source has
(NIH is 64 px only), so neither sharpness nor exposure separates the sources.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.inference.preprocess import equalise, squash
from models.training.data import read_image01

TBX11K = {
    "dataset": "TBX11K, every TB film of the official train split (600 adult films, "
               "radiologists' boxes), 512x512 derivative",
    "citation": "Liu Y., Wu Y.-H., Ban Y., Wang H., Cheng M.-M. (2020), Rethinking "
                "Computer-aided Tuberculosis Diagnosis, CVPR",
    "licence": "CC BY 4.0",
}
SIZE = 64  # why: NIH's films exist at 64 px only; every source is brought to it


@dataclass
class TbFilms:
    images: np.ndarray          # N x 64 x 64 float32, equalised to [0, 1]
    boxes: list[np.ndarray]     # per film, K x 4 (x0, y0, x1, y1) as fractions of the film
    kinds: list[str]            # active / latent / active+latent
    ids: list[str]              # TBX11K ids


def parse_boxes(text: str, side: float = 512.0) -> np.ndarray:
    """``Kind:x0,y0,x1,y1;...`` in pixels of a ``side`` film -> K x 4 fractions."""
    out = []
    for part in filter(None, text.split(";")):
        _, coords = part.split(":", 1)
        out.append([float(v) / side for v in coords.split(",")])
    return np.clip(np.array(out, dtype=np.float32).reshape(-1, 4), 0.0, 1.0)


def to_working(image: np.ndarray) -> np.ndarray:
    """A decoded film -> the 64-px, equalised film that mixing works on."""
    grey = image if image.ndim == 2 else image.mean(axis=2)
    return equalise(squash(grey.astype(np.float32), SIZE))


def tbx11k(data_root: Path) -> TbFilms:
    base = Path(data_root) / "cxr" / "tbx11k-tb600"
    with open(base / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    images = np.stack([to_working(read_image01(base / r["file"])) for r in rows])
    return TbFilms(images, [parse_boxes(r["boxes_512px"]) for r in rows],
                   [r["tb_type"] for r in rows], [r["tbx11k_id"] for r in rows])


def box_mask(boxes: np.ndarray, size: int = SIZE, grow: float = 0.0) -> np.ndarray:
    """size x size float32, 1 inside any box (each side grown by ``grow`` of the film)."""
    mask = np.zeros((size, size), np.float32)
    for x0, y0, x1, y1 in boxes:
        a, b = int(np.floor((x0 - grow) * size)), int(np.floor((y0 - grow) * size))
        c, d = int(np.ceil((x1 + grow) * size)), int(np.ceil((y1 + grow) * size))
        mask[max(b, 0):min(d, size), max(a, 0):min(c, size)] = 1.0
    return mask


def paste(dest: np.ndarray, src: np.ndarray, mask: np.ndarray, ring_px: int = 4) -> np.ndarray:
    """``src`` inside ``mask`` onto ``dest``, its edge feathered.

    The patch's level and spread are matched on a ring *around* the mask, not inside
    it: a lesion brighter than the lung around it stays brighter on the new film, and
    lesion-free lung put over a lesion comes out at the surrounding lung's level (the
    opacity is what TB looks like; matching inside the mask would erase it).
    """
    inside = mask > 0.5
    if not inside.any():
        return dest.copy()
    k = 2 * ring_px + 1
    ring = (cv2.dilate(inside.astype(np.uint8), np.ones((k, k), np.uint8)) > 0) & ~inside
    if ring.sum() < 8:  # the mask fills the film: match on everything
        ring = np.ones_like(inside)
    s, d = src[ring], dest[ring]
    # why: a flat ring must not blow a lesion up (or flatten it) many times over
    gain = float(np.clip((d.std() + 1e-3) / (s.std() + 1e-3), 0.5, 2.0))
    matched = (src - s.mean()) * gain + d.mean()
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.0)
    return np.clip(dest * (1 - soft) + matched * soft, 0, 1).astype(np.float32)


def lesion_free_donor(masks: np.ndarray, candidates: np.ndarray, region: np.ndarray,
                      rng: np.random.Generator) -> int | None:
    """One of ``candidates`` (indices into ``masks``) with no box touching ``region``."""
    if len(candidates) == 0:
        return None
    overlap = masks[candidates].reshape(len(candidates), -1) @ region.ravel()
    free = candidates[overlap == 0]
    return int(rng.choice(free)) if len(free) else None


@dataclass
class Sources:
    """Every film the recipe uses, at 64 px, once read."""

    tb: Any                    # models.training.tb.TbFilms (equalised)
    tb_raw: np.ndarray         # the same films squashed, not equalised
    tb_masks: np.ndarray       # N x 64 x 64 box masks
    nih_raw: np.ndarray
    nih_y: np.ndarray
    nih_groups: list[str]
    nih_rows: list[dict]
    kid_raw: np.ndarray
    kid_y: np.ndarray
    kid_report: np.ndarray


def load_sources(data_root: Path, log: Any = print) -> Sources:
    from models.training.cxr import kermany, nih_adults

    tb = tbx11k(data_root)
    base = Path(data_root) / "cxr" / "tbx11k-tb600" / "images"
    tb_raw = np.stack([squash(_grey(read_image01(base / f"{i}.jpg")), SIZE) for i in tb.ids])
    n_raw, n_y, n_groups, n_rows = nih_adults(data_root)
    k_raw, k_y, _, k_report = kermany(data_root)
    log(f"  sources: {len(tb.ids)} TB films, {len(n_y)} NIH films, {len(k_y)} children's")
    return Sources(tb, tb_raw, np.stack([box_mask(b) for b in tb.boxes]), n_raw, n_y,
                   n_groups, n_rows, k_raw, k_y, k_report)


def films_at(s: Sources, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TB films at ``size`` from their 512-px files; NIH and children upsampled from 64."""
    from models.training.data import DEFAULT_DATA_ROOT

    base = DEFAULT_DATA_ROOT / "cxr" / "tbx11k-tb600" / "images"
    tb = np.stack([equalise(squash(_grey(read_image01(base / f"{i}.jpg")), size))
                   for i in s.tb.ids])
    up = lambda a: np.stack([equalise(squash(f, size)) for f in a])  # noqa: E731
    return tb, up(s.nih_raw), up(s.kid_raw)


def _grey(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else image.mean(axis=2).astype(np.float32)


# What each pool film is, for :class:`MixedBatches`.
TB, NIH_NORMAL, NIH_ABNORMAL, OTHER_NORMAL, NIH_OTHER_DISEASE, CHILD_PNEUMONIA = range(6)
TB_HEAD, ABNORMAL_HEAD, PNEUMONIA_HEAD = 0, 1, 2
# The hospital each kind of film comes from (the adversarial source head's target).
SOURCE_OF = {TB: 0, NIH_NORMAL: 1, NIH_ABNORMAL: 1, OTHER_NORMAL: 2, NIH_OTHER_DISEASE: 1,
             CHILD_PNEUMONIA: 2}
# NIH's text-mined findings that TB does not explain alone (heart, air, oedema, collapse):
# a film with only these is a "not TB" film that is not normal, the negative a TB clinic
# sees most. Infiltration, consolidation, mass, nodule, fibrosis, pleural thickening,
# pneumonia and effusion (pleural TB) may be TB: such films never become TB negatives.
OTHER_DISEASE_FINDINGS = frozenset({"Cardiomegaly", "Pneumothorax", "Emphysema", "Edema",
                                    "Atelectasis", "Hernia"})


def other_disease(finding_labels: str) -> bool:
    """An NIH film whose every finding is one TB does not explain alone."""
    found = set(finding_labels.split("|")) - {"No Finding"}
    return bool(found) and found <= OTHER_DISEASE_FINDINGS


@dataclass(frozen=True)
class Mixing:
    """How often each mixed film is made (0 everywhere: plain films only)."""

    remove_lesions: float = 0.3    # a TB film's boxes filled with lesion-free TB tissue
    paste_lesion: float = 0.25     # an NIH normal gets a TB box's content
    paste_tissue: float = 0.25     # an NIH normal gets lesion-free TB tissue
    abnormal_head: float = 0.3     # share of NIH normals that teach the abnormal head
    # share of children's normals that teach a third head, children's pneumonia vs
    # normal (where the recipe gives it pneumonia films): one hospital's films with and
    # without an opacity, a question no hospital shortcut can answer
    pneumonia_head: float = 0.0
    grow: float = 0.02             # boxes grown by this share of the film when removed
    # balanced: every film of the TB task is TB or not with even odds whatever its
    # hospital (the rates above are then unused), and most films carry a patch of
    # foreign lung whatever their label, so neither the hospital nor a seam can answer
    balanced: bool = False
    neutral_patch: float = 0.8     # balanced: share of films given a lesion-free patch
    # share of films (any source, mixed or not) brought to 64-px detail and back before
    # augmentation: at an input above 64 px, detail must not say "TB film" (NIH exists
    # at 64 px only), and a lesion must still be found on a soft film
    degrade: float = 0.0
    # children's normals (a third hospital, the TB films' country) get TB lesions and
    # lesion-free TB tissue pasted at the NIH normals' rates: a lesion must read as TB on
    # any hospital's film, not only on NIH's
    paste_on_children: bool = False


class MixedBatches:
    """``make_batch`` for the adult chest recipe: (x, y, head, masks at CAM size, source
    of the film's background).

    Donors for every paste are other films *of the same batch*, so a cross-fitted member
    only ever mixes films of its own training folds. With ``cells`` the masks are
    per-cell targets (:func:`cell_targets`) for ``TrainConfig.cell_weight``.
    """

    def __init__(self, films: np.ndarray, kind: np.ndarray, masks: np.ndarray,
                 preprocess, augment, mixing: Mixing, cam_size: int,
                 cells: bool = False) -> None:
        self.films, self.kind, self.masks = films, kind, masks
        self.preprocess, self.augment = preprocess, augment
        self.mixing, self.cam_size, self.cells = mixing, cam_size, cells

    def one(self, i: int, tb_in_batch: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, float, int, np.ndarray]:
        if self.mixing.balanced:
            return self.balanced(i, tb_in_batch, rng)
        m, kind = self.mixing, self.kind[i]
        img, none = self.films[i], np.zeros_like(self.masks[i])
        others = tb_in_batch[tb_in_batch != i]
        if kind == TB:
            if rng.random() < m.remove_lesions and self.masks[i].any():
                region = box_mask_grow(self.masks[i], m.grow)
                donor = lesion_free_donor(self.masks, others, region, rng)
                if donor is not None:
                    return paste(img, self.films[donor], region), 0.0, TB_HEAD, none
            return img, 1.0, TB_HEAD, self.masks[i]
        pasted_on = kind == NIH_NORMAL or (kind == OTHER_NORMAL and m.paste_on_children)
        if pasted_on and len(others):
            r = rng.random()
            src = int(rng.choice(others))
            if r < m.paste_lesion and self.masks[src].any():
                return paste(img, self.films[src], self.masks[src]), 1.0, TB_HEAD, \
                    self.masks[src]
            if r < m.paste_lesion + m.paste_tissue and self.masks[src].any():
                donor = lesion_free_donor(self.masks, others, self.masks[src], rng)
                if donor is not None:
                    return paste(img, self.films[donor], self.masks[src]), 0.0, TB_HEAD, none
        if kind == NIH_ABNORMAL:
            return img, 1.0, ABNORMAL_HEAD, none
        if kind == NIH_NORMAL and rng.random() < m.abnormal_head:
            return img, 0.0, ABNORMAL_HEAD, none
        if kind == CHILD_PNEUMONIA:
            return img, 1.0, PNEUMONIA_HEAD, none
        if kind == OTHER_NORMAL and rng.random() < m.pneumonia_head:
            return img, 0.0, PNEUMONIA_HEAD, none
        return img, 0.0, TB_HEAD, none

    def balanced(self, i: int, tb_in_batch: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, float, int, np.ndarray]:
        m, kind = self.mixing, self.kind[i]
        img, none = self.films[i], np.zeros_like(self.masks[i])
        others = tb_in_batch[tb_in_batch != i]
        if kind == NIH_ABNORMAL:
            return img, 1.0, ABNORMAL_HEAD, none
        if kind == NIH_NORMAL and rng.random() < m.abnormal_head:
            return img, 0.0, ABNORMAL_HEAD, none
        want_tb = rng.random() < 0.5
        if kind == TB:
            if not want_tb and self.masks[i].any():
                region = box_mask_grow(self.masks[i], m.grow)
                donor = lesion_free_donor(self.masks, others, region, rng)
                if donor is not None:
                    return paste(img, self.films[donor], region), 0.0, TB_HEAD, none
            if rng.random() < m.neutral_patch:  # a seam that says nothing
                img = self.neutral(img, self.masks[i], others, rng)
            return img, 1.0, TB_HEAD, self.masks[i]
        if want_tb and len(others):
            src = int(rng.choice(others))
            if self.masks[src].any():
                return paste(img, self.films[src], self.masks[src]), 1.0, TB_HEAD, \
                    self.masks[src]
        if rng.random() < m.neutral_patch:
            img = self.neutral(img, np.zeros_like(self.masks[i]), others, rng)
        return img, 0.0, TB_HEAD, none

    def neutral(self, img: np.ndarray, own: np.ndarray, others: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
        """Lesion-free TB lung pasted where another film had a box and this one has none."""
        if not len(others):
            return img
        where = self.masks[int(rng.choice(others))]
        if not where.any() or (where * own).any():
            return img
        donor = lesion_free_donor(self.masks, others, where, rng)
        return img if donor is None else paste(img, self.films[donor], where)

    def __call__(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        tb_in_batch = idx[self.kind[idx] == TB]
        xs, ys, heads, masks = [], [], [], []
        for i in idx:
            img, y, head, mask = self.one(int(i), tb_in_batch, rng)
            if self.mixing.degrade and rng.random() < self.mixing.degrade:
                img = soften(img)
            img, mask = self.augment(img, rng, mask)
            xs.append(self.preprocess(img))
            ys.append(y)
            heads.append(head)
            if not self.cells:
                masks.append(cv2.resize(mask, (self.cam_size, self.cam_size),
                                        interpolation=cv2.INTER_AREA))
            elif head == TB_HEAD:
                masks.append(cell_targets(mask, self.cam_size))
            else:  # another task's film: no cell of it is judged
                masks.append(np.full((self.cam_size, self.cam_size), -1.0, np.float32))
        return (np.stack(xs), np.array(ys, np.float32), np.array(heads),
                np.stack(masks).astype(np.float32),
                np.array([SOURCE_OF[int(k)] for k in self.kind[idx]]))


def soften(film: np.ndarray, detail: int = SIZE) -> np.ndarray:
    """A film brought to ``detail`` (NIH's 64 px unless said) and back to its own size."""
    return squash(squash(film, detail), film.shape[0])


def cell_targets(mask: np.ndarray, cam_size: int, inside: float = 0.4,
                 edge: float = 0.03) -> np.ndarray:
    """A film's box mask -> per-cell targets at the CAM's size: 1 where a box covers at
    least ``inside`` of the cell, -1 (not judged) on a box's edge (the box grown by
    ``edge`` of the film: radiologists draw loosely), 0 elsewhere (lung without a box,
    the film's border)."""
    g = (cam_size, cam_size)
    cover = cv2.resize(mask.astype(np.float32), g, interpolation=cv2.INTER_AREA)
    near = cv2.resize(box_mask_grow((mask > 0.5).astype(np.float32), edge), g,
                      interpolation=cv2.INTER_AREA)
    return np.where(cover >= inside, 1.0, np.where(near > 0, -1.0, 0.0)).astype(np.float32)


def box_mask_grow(mask: np.ndarray, grow: float) -> np.ndarray:
    """A 0/1 mask grown by ``grow`` of its side in every direction."""
    k = 2 * int(round(grow * mask.shape[0])) + 1
    return cv2.dilate(mask, np.ones((k, k), np.uint8)) if k > 1 else mask


def remove_lesions(films: np.ndarray, masks: np.ndarray, grow: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Every boxed film with its boxes filled from another film of the set (the
    check of how much a model's TB score needs the lesion); returns (films, which)."""
    out, which = [], []
    candidates = np.arange(len(films))
    for i in range(len(films)):
        if not masks[i].any():
            continue
        region = box_mask_grow(masks[i], grow)
        donor = lesion_free_donor(masks, candidates[candidates != i], region, rng)
        if donor is not None:
            out.append(paste(films[i], films[donor], region))
            which.append(i)
    return np.stack(out), np.array(which)
