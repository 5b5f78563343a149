"""The adult chest recipe's training choices: each one a row of the shortcut table
(``build/tb_shortcuts.py``), the shipped one named by ``SHIPPED``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from models.training.tb import Mixing


@dataclass(frozen=True)
class Choice:
    """One training choice set; ``build/tb_shortcuts.py`` measures each."""

    equalise: bool = True
    mixing: Mixing = Mixing()
    attention_weight: float = 0.5
    children_negatives: bool = False
    adversarial_weight: float = 0.0
    peak: bool = False         # the logit from the map's peak, not its mean (nets.CamNet)
    size: int = 64             # model input; TB films at their own detail above 64 px
    widths: tuple[int, ...] = (16, 32, 64, 128)  # channels per stage (nets.CamNet)
    # every film (training and serving) brought to this detail first, then to ``size``
    detail: int | None = None
    # the CAM learns cell by cell, lesion (in a box) vs lung outside any box of the same
    # film, at this weight beside the film's loss (train.cell_loss); the map-in-the-boxes
    # loss is then off
    cell_weight: float = 0.0
    # share of the batches: TB films, NIH normals, NIH abnormals (the second head),
    # children's normals (only with children_negatives)
    shares: tuple[float, float, float, float] = (0.45, 0.35, 0.2, 0.1)
    # NIH films whose every finding TB does not explain alone (tb.other_disease) are TB
    # negatives at this share of the batches (0: they teach the second head, as others)
    other_disease_share: float = 0.0
    # children's pneumonia films (Kermany) teach a third head at this share of the
    # batches, beside children's normals (Mixing.pneumonia_head); never the TB head
    pneumonia_share: float = 0.0
    # the augmentation's range of scales: above 1 the film framed tighter (collimation),
    # below 1 looser
    zoom: tuple[float, float] = (0.85, 1.15)
    # one scale for both axes (augment._affine) instead of one each, and the largest
    # move, as a share of the film
    zoom_isotropic: bool = False
    shift: float = 0.06
    # the share of training films given a vendor's multiscale processing on top
    # (augment.vendor_processing, strengths drawn at random)
    processing: float = 0.0
    processing_strength: tuple[float, float] = (0.6, 1.2)  # most flattening, enhancement
    # training length (TrainConfig.epochs of 2,560 films each); every row before session
    # 14 was trained for 14
    epochs: int = 14
    note: str = ""


NO_MIXING = Mixing(remove_lesions=0, paste_lesion=0, paste_tissue=0)
CELL_MIXING = Mixing(remove_lesions=0.2, paste_lesion=0.35, paste_tissue=0.2, abnormal_head=0.0)


def _lesion_cells(**choice: Any) -> Choice:
    """The map taught cell by cell (``cell_weight``) with lesion mixing, children's
    normals and the peak score; no second head."""
    return Choice(**{"attention_weight": 0.0, "cell_weight": 2.0, "children_negatives": True,
                     "peak": True, "mixing": CELL_MIXING, "shares": (0.45, 0.35, 0.0, 0.2),
                     **choice})


VARIANTS = {
    "plain": Choice(equalise=False, mixing=NO_MIXING, attention_weight=0,
                    note="standardised intensities, plain films: TB vs NIH normals"),
    "equalised": Choice(mixing=NO_MIXING, attention_weight=0,
                        note="+ rank-equalised intensities"),
    "equalised+mixing": Choice(attention_weight=0, note="+ lesion mixing"),
    "equalised+mixing+boxes": Choice(note="+ the map taught to sit in the boxes"),
    "equalised+mixing+boxes+children": Choice(
        children_negatives=True, note="+ Kermany children's normals as negatives"),
    "equalised+mixing+boxes+children+peak": Choice(
        children_negatives=True, peak=True,
        note="+ the score from the map's peak (strongest 3x3 neighbourhood), not its mean "
             "(shipped in 2.0-2.1, trained 14 epochs)"),
    "balanced mixing+boxes": Choice(
        mixing=Mixing(balanced=True),
        note="equalised; mixing balanced: TB or not with even odds on either hospital's "
             "film, most films with a foreign patch; map in the boxes"),
    "balanced mixing+boxes+children": Choice(
        mixing=Mixing(balanced=True), children_negatives=True,
        note="not shipped: balanced mixing (every film TB or not with even odds, whatever "
             "its hospital; most with a foreign patch), boxes, children"),
    "balanced mixing+boxes+children+peak": Choice(
        mixing=Mixing(balanced=True), children_negatives=True, peak=True,
        note="balanced mixing, children, score from the map's peak"),
    "balanced mixing+boxes+children+adversarial": Choice(
        mixing=Mixing(balanced=True), children_negatives=True, adversarial_weight=0.3,
        note="not shipped: balanced mixing, boxes, children + the hospital taken out of "
             "the features (gradient reversal)"),
    "lesion cells at 128 px": _lesion_cells(
        size=128, mixing=replace(CELL_MIXING, degrade=0.5),
        note="not shipped (sharp films scored as TB): 128 px; the map learns cell by "
             "cell a box's lesion against the same film's lung outside any box (the "
             "hospital cannot answer a cell); half the films of every source at 64-px "
             "detail; TB lesions pasted on NIH normals and lesions removed from TB "
             "films; children's normals; score from the map's peak"),
    "lesion cells at 64 px": _lesion_cells(
        note="not shipped (lesion AUCs no better on TB films, better on NIH films, more "
             "NIH normals flagged: 0.28): 64 px; the 8x8 map learns cell by cell a box's "
             "lesion against the same film's lung outside any box; lesion mixing; "
             "children's normals; score from the map's peak"),
    "lesion cells at 128 px of 64-px detail": _lesion_cells(
        size=128, detail=64,
        note="not shipped (fold 0 no better than at 64 px: lesion AUC on TB films 0.71, "
             "lesions removed flagged 0.87): every film at 64-px detail "
             "(training and serving) brought up to 128 px: a 16x16 map learning cell by "
             "cell, with no film sharper than NIH's; lesion mixing; children's normals; "
             "score from the map's peak"),
    "equalised+mixing+boxes+children+peak+other disease": Choice(
        children_negatives=True, peak=True, shares=(0.45, 0.3, 0.15, 0.1),
        other_disease_share=0.1,
        note="not shipped (more of the score from the hospital): the shipped choice + NIH "
             "films whose only findings TB does not explain alone (heart, emphysema, "
             "oedema, collapse, pneumothorax) as TB negatives"),
    "equalised+mixing+boxes at 128 px": Choice(
        size=128, note="not shipped: mixing and boxes at a 128-px input (TB films at "
                       "128 px, NIH's upsampled from 64)"),
}
BEFORE_2_2 = VARIANTS["equalised+mixing+boxes+children+peak"]  # shipped in 2.0-2.1
VARIANTS["shipped, trained 3x longer"] = replace(
    BEFORE_2_2, epochs=42,
    note="measured (session 14): the 2.1 choice trained three times longer (42 epochs of "
         "2,560 films, 14 before)")
VARIANTS["shipped, trained 6x longer"] = replace(
    BEFORE_2_2, epochs=84,
    note="+ trained six times longer (84 epochs of 2,560 films, 14 before) (shipped in "
         "2.2.0)")
VARIANTS["shipped, trained 9x longer"] = replace(
    BEFORE_2_2, epochs=126,
    note="not shipped (no clear gain: the trend has flattened; session 15): the 2.1 choice "
         "trained nine times longer (126 epochs of 2,560 films, 14 before)")
SHIPPED_2_2 = "shipped, trained 6x longer"  # the later rows below start from it
VARIANTS["shipped + framing 0.8-1.3"] = replace(
    BEFORE_2_2, zoom=(0.8, 1.3),
    note="measured (session 12): the shipped choice with films framed from 0.8 to 1.3 of "
         "their size in training (0.85-1.15): tight collimation cost TB films their flag")
VARIANTS["shipped + vendor processing"] = replace(
    BEFORE_2_2, processing=0.6,
    note="measured (session 13): the shipped choice with 60 % of training films given a "
         "vendor's multiscale processing (large-scale shading flattened, fine structure "
         "enhanced, strengths at random), every source alike")
VARIANTS["shipped + vendor enhancement"] = replace(
    BEFORE_2_2, processing=0.6, processing_strength=(0.0, 1.2),
    note="measured (session 13): the shipped choice with 60 % of training films given a "
         "vendor's fine-structure enhancement only (no flattening of the shading, which "
         "took lesion contrast with it), strengths at random, every source alike")
VARIANTS["shipped + children's pneumonia head"] = replace(
    BEFORE_2_2, shares=(0.45, 0.35, 0.2, 0.15), pneumonia_share=0.15,
    mixing=Mixing(pneumonia_head=0.4),
    note="measured (session 14): the 2.1 choice with a third head learning children's "
         "pneumonia vs normal from one hospital (Kermany), so the shared body learns an "
         "opacity where no hospital can answer; the TB head alone is served")
VARIANTS["shipped 84 epochs + vendor processing"] = replace(
    VARIANTS[SHIPPED_2_2], processing=0.6,
    note="not shipped (no gain at 84 epochs either; session 17): the 2.2 choice with 60 % "
         "of training films given a vendor's multiscale processing, as 'shipped + vendor "
         "processing' at 14 epochs")
VARIANTS["shipped + lesions pasted on children's normals"] = replace(
    VARIANTS[SHIPPED_2_2], mixing=Mixing(paste_on_children=True),
    note="not shipped (no lesion gain; children's pneumonia flagged more; session 18): "
         "the 2.2 choice with TB lesions (and lesion-free TB tissue) pasted on children's "
         "normals as on NIH normals: a third hospital's films with and without a lesion")
VARIANTS["shipped, 1.5x wider"] = replace(
    VARIANTS[SHIPPED_2_2], widths=(24, 48, 96, 192),
    note="+ every stage 1.5 times as wide (24-192 channels against 16-128) (shipped since "
         "2.3.0; session 18: better lesion checks on all five folds)")
SHIPPED = "shipped, 1.5x wider"
VARIANTS["2.3 + framing 0.8-1.3"] = replace(
    VARIANTS[SHIPPED], zoom=(0.8, 1.3),
    note="not shipped (within the noise of two trainings; session 19): the 2.3 choice "
         "with films framed from 0.8 to 1.3 of their size in training (0.85-1.15), since "
         "2.3.0 lets tightly framed TB films go more often than 2.2.0 (0.74 against 0.80)")
VARIANTS["2.3 + more lesion-free TB lung on NIH normals"] = replace(
    VARIANTS[SHIPPED], mixing=Mixing(paste_tissue=0.45),
    note="not shipped (no lesion gain, pasted lesions flagged less; session 19): the 2.3 "
         "choice with lesion-free TB lung pasted on 45 % of NIH normals (25 %), since a "
         "foreign patch alone raises an NIH normal's score (report split, AUC 0.69)")
VARIANTS["2.3 + framing 0.8-1.35 on both axes at once"] = replace(
    VARIANTS[SHIPPED], zoom=(0.8, 1.35), zoom_isotropic=True, shift=0.1,
    note="not shipped (trades the lesion for the framing, two seeds; session 20): the "
         "2.3 choice with films framed from 0.8 to 1.35 of their size, one scale for both "
         "axes (each axis its own before, so a film framed tight on every side was rare: "
         "4 % of draws beyond 1.2 against 27 % here), moved up to 10 % (6 %), since 2.3.0's "
         "members flag TB films cut 5 % a side 0.86, 10 % 0.73, 15 % 0.59 "
         "(build/tb_framing.py)")
