"""The adult chest recipe's own account of its choices, for its model card
(``build/bundle_writer.render_card``'s ``story``); the figures come from
``build/tb_shortcuts.py`` (``models/loso/cxr-adult.json``)."""

CARD = """## Choices and why

Each choice below is a row of the shortcut table further down: one model per choice,
trained on four folds and measured on the fifth, by what a hospital shortcut would give
away rather than by the in-source AUC (which the hospital alone can bring near 1).

- **One resolution, one intensity scale for every source.** NIH's films exist at 64 px
  only, so every film, TB or not, is squashed to 64 px. A larger input shows TB films
  sharper than NIH's upsampled ones and teaches "sharp = TB": at 128 px (the table's
  last row) lesion-removed TB films were flagged more (0.94 against 0.78 at 64 px, same
  fold), the lesion AUC on TB films fell (0.58 against 0.65) and no NIH normal was
  flagged at all. Intensities are replaced by their rank in the film, so exposure, window
  and a vendor's curve (any monotone change) cannot tell the hospitals apart.
- **Lesion mixing with the radiologists' boxes.** TB films with their boxes filled from
  another TB film's lesion-free lung are negatives; NIH normals with a TB box pasted in
  are positives; NIH normals with TB lung from outside any box are negatives. Patches
  are matched to the lung *around* them, so an opacity stays an opacity. Donors come
  from the same batch, so no member mixes a film it should not see.
- **The map is taught to sit in the boxes** (a loss on the share of the class
  activation map inside them, weight 0.5): the pointing game on held-out TB films went
  from about 0.3 to about 0.8.
- **Children's normal films (Kermany, China) as negatives.** Without them, any film
  that does not look like NIH's scored as TB: 94 % of children's normals were flagged
  by the model with boxes. TB is the one source of positives; a second hospital of
  negatives, from the TB films' own country, takes "not NIH = TB" away (2 % flagged;
  those children are patients never trained on, their hospital is in training).
- **The score is the map's peak** (its strongest 3x3 neighbourhood), not its mean: TB
  is a local finding, and evidence spread evenly over a film (how a hospital's films
  look) moves a peak no more than it moves one neighbourhood. On held-out TB films,
  removing the boxed lesions lowered the score more (lesion AUC on TB films 0.72 against
  0.67 for the mean), a pasted lesion was flagged more often (0.56 against 0.39) and the
  hospital was harder to read from the features (0.92 against 0.94). The price: more
  NIH normals flagged at the same sensitivity (0.27 against 0.16), and a lesion AUC on
  NIH films of 0.63 against 0.65.
- **Trained six times longer (since 2.2.0):** 84 epochs of 2,560 mixed films per
  member, 14 before. Every choice measured up to session 13 was trained for 14 epochs,
  and the loss was still falling. On held-out folds 0-1, the same choice trained longer
  lets TB films whose lesions were removed go far more often (flagged 0.29 at 84
  epochs, 0.52 at 42, 0.72 at 14), tells a film from itself with its lesion far more
  often (lesion AUC on TB films 0.90, 0.81, 0.71; on NIH films 0.74, 0.68, 0.63),
  flags NIH normals with a TB lesion pasted in more (0.63, 0.47, 0.55) and NIH normals
  given a vendor's processing less (0.20, 0.33, 0.40), at a similar share of plain NIH
  normals flagged (0.21, 0.23, 0.24). Its features tell the hospitals apart more
  (source AUC 0.97, 0.93, 0.95), but the score leans on the lesion, not on them. Its TB
  head scores NIH's other findings no higher than NIH's normals (NIH abnormal AUC 0.47,
  0.49, 0.62; NIH films whose only findings TB does not explain alone flagged 0.22,
  0.14, 0.47): a TB answer, not "any abnormality". Nine times longer (126 epochs)
  gained nothing clear (lesions removed flagged 0.20, but in-source AUC 0.93 and
  processed NIH normals flagged 0.27: table), so 84 stays. The same choice run again
  with another seed differs from itself by as much (NIH normals flagged 0.12 against
  0.21, lesion AUC on NIH films 0.77 against 0.74): on two folds, differences of a few
  hundredths between rows are noise. The map: 2.2.0's plain 8 x 8
  map pointed as often as 2.1.0's (pointing game 0.75) and explained the score better
  (deleting its strongest tenth drops the logit by 5.1, 2.1.0's by 0.85), but jumped
  with the network's grid (r 0.79 under a 4-px shift, 0.80 needed). The map shown is
  now averaged over the film and three copies moved half a cell (4 px) right, down and
  both, run as one batch of 4: r 0.97 (0.96 under a 3-px shift), pointing game 0.83.
  Its evidence inside the two-ellipse lung template is 0.57; the radiologists' own
  boxes reach only 0.54 there on the same films (TB's upper zones and apices lie at
  the template's edge, and a box is a rectangle over the chest wall), so where boxes
  exist that check asks no more of a map than of the boxes (`build/heatmap_checks.py`,
  added in session 15). Maps are shown again.
- **A second head learns NIH's abnormal vs normal** from the same body; it is not
  served. Alone it reached an NIH abnormal-vs-normal AUC of about 0.64 in the trial
  runs, summed with the TB head 0.60 (table): at 64 px NIH's text-mined labels do not
  support an "other abnormality" finding, so the box reports one finding, TB-consistent
  or not.
- **Balanced mixing** (every film TB or not with even odds, whatever its hospital) and
  **gradient reversal** against the source were measured and not shipped: in-source AUC
  0.78 and 0.70, 52 % and 71 % of NIH's normals flagged at the same sensitivity, lesion
  AUC on TB films 0.60, against 0.72 for the shipped choices.
- **Ensemble of 5 members, cross-fitted;** the threshold is the most specific one with
  out-of-fold sensitivity >= 0.95 on real TB films against NIH normals (WHO's profile:
  >= 0.90 with specificity >= 0.70), leaving room for a new hospital. Calibration uses
  the real films only; the mixed films are reported beside them.
- **Measured and not shipped (session 8): a map that learns the lesion cell by cell at
  128 px** (`lesion cells at 128 px`: each cell of a 16x16 map taught "inside a
  radiologist's box" against "lung outside any box of the same film", half of every
  source's films at 64-px detail, film loss beside it). On held-out folds its shortcut
  figures were better than the shipped row (lesion AUC on TB films about 0.78 against
  0.72, on NIH films 0.70 against 0.63, NIH normals flagged 0.13 against 0.27), and a
  full build scored out-of-fold AUC 0.968 with specificity 0.85 at sensitivity 0.95.
  It was not shipped because detail still said "TB": NEMA's RG1, a sharp adult PA CR of
  a hospital never seen, scored 0.75 (flagged) at full detail and 0.23 at 64-px detail,
  and held-out TB films lost a third of their flags at 64-px detail. NIH's negatives
  are all soft, so at the film level a sharp film is nearly always a positive. A next
  try must give the film loss sharp negatives (every source at one detail, or
  lesion-free sharp films), and the shortcut table must score a sharp film of a third
  hospital.
- **Measured and not shipped (session 9).** The shortcut table gained three checks: a
  sharp film of a third hospital (NEMA's RG1, no TB reported), the held-out TB films at
  NIH's 64-px detail, and held-out NIH films with findings TB does not explain alone.
  - *Other disease as TB negatives* (NIH films whose only findings are heart, emphysema,
    oedema, collapse or pneumothorax). Over five folds it flagged fewer NIH normals
    (0.11 against 0.19) and fewer such films (0.19 against 0.32), and a full build
    raised the out-of-fold specificity on real films to 0.75 (2.1.0: 0.68, both at
    sensitivity 0.955). But that build also flagged more TB films whose lesions had been
    removed (0.90 against 0.86) and fewer NIH normals with a TB lesion pasted in (0.62
    against 0.67), and the lesion AUC on TB films fell (0.67 against 0.69): the gain came
    from "NIH film = not TB", the hospital again, which an unseen hospital does not give.
  - *The map learning cell by cell at 64 px* (8x8): over four folds the lesion AUC on
    NIH films rose (0.66 against 0.60) but not on TB films (0.70 against 0.69), and
    more NIH normals were flagged (0.28 against 0.19).
  - *The cell map at 128 px with every film at 64-px detail* (16x16, training and
    serving alike; fold 0 only): lesion AUC on TB films 0.71, on NIH films 0.62, lesions
    removed flagged 0.87, against 0.72-0.73, 0.64-0.66 and 0.73-0.75 for the shipped
    choice's fold-0 models. No better than 64 px: session 8's gain at 128 px came from
    detail, which only the TB films have.
  - RG1 at 64 px sits near the flag: the shipped choice's single-fold models put it
    above 19 % to 87 % of held-out NIH normals, and 2.1.0 scores it 0.28 against its
    threshold of 0.32. A site with sharp DR films must calibrate on its own outcomes.
- **Measured and not shipped (session 10): detail from the TB films alone**
  (`build/tb_own_lung.py`, 256 px, folds 0-1). A 16x16 map learns a radiologist's box
  against the same film's lung outside any box, half the films softened to 64-256-px
  detail: every positive and negative cell comes from one hospital's films.
  - *TBX11K only*: the map points better (pointing game 0.85 against 0.80) but the
    lesion AUC on TB films is no better (0.69 against 0.69), and 84 % of NIH's
    normals and 96 % of children's normals were flagged: with no other hospital in
    training, whatever does not look like TBX11K's lung scores as a lesion.
  - *With NIH normals as 30 % of each batch* (every cell negative): NIH normals flagged
    fell to 0.06, but detail answered again: held-out TB films at 64-px detail kept
    only 0.52 of their flags (0.89 shipped), RG1 was flagged in one of two folds, and
    67 % of children's normals were flagged.
  - More detail cannot be had without sharp TB-negative films, by this road too.
  - The lesion AUC on TB films has a ceiling of its own: TBX11K's films carry disease
    outside the radiologists' boxes. For the TBX11K-only fold-0 model, filling a wider
    area (each box grown by 0.10 of the film instead of 0.02) raised it from 0.73 to
    0.81; with the usual fill, a quarter of the held-out films scored as high or higher
    with their boxed lesions gone. The plateau near 0.70 across choices is partly the
    check's.
- **On the box (session 12): a film's flat border is left out.** The box cuts a
  radiograph's flat dark or bright border (collimation, an export's padding) before
  this model sees it (`appliance/screening/film_border.py`): on the held-out TBX11K
  films a white border of 8 % of each side had taken the median score from 93 to 67.
- **Measured and not shipped (session 12): framing.** Held-out films with 10 % of
  each side cut away (tight collimation) lose flags: TB films 0.72 flagged at the
  threshold that flags 0.90 of them uncut (folds 0-2). Training with a wider zoom
  (0.8-1.3, shipped 0.85-1.15) does not win them back (0.73) and costs the lesion checks
  (lesion AUC on TB films 0.65 against 0.68, lesions removed flagged 0.84 against
  0.76). A site whose films are collimated tighter than TBX11K's should calibrate on
  its own outcomes (`appliance calibrate`).
- **Measured and not shipped (session 13): a vendor's processing.** DR and CR systems
  flatten a film's large-scale shading and sharpen its fine structure, each vendor
  and hospital its own way; rank equalisation takes out any monotone curve, not this.
  Held-out NIH normals so processed (`augment.vendor_processing`, flatten 0.5,
  enhance 0.5) are flagged at 0.40 against 0.24 as they are, at the threshold that
  flags 0.90 of the held-out TB films (folds 0-1): a hospital whose films are processed
  harder than NIH's will see more false flags. Training with such processing on 60 %
  of the films, every source alike, lowers that to 0.33 but costs the lesion checks
  (lesion AUC on TB films 0.66 against 0.71, lesions removed flagged 0.85 against
  0.72); with the enhancement alone (no flattening) the lesion checks fall less (0.69)
  and the processed normals are flagged at 0.36, no clearer a choice. Served with a
  flip averaged in (test-time augmentation), 2.1.0 did no better
  on the report split (lesion AUC on TB films 0.65 against 0.67). Calibrate on the
  site's own outcomes (`appliance calibrate`).
- **Measured and not shipped (session 14): a third head for children's pneumonia.**
  Kermany's pneumonia and normal films come from one hospital, so a head learning one
  from the other (beside the TB head, on the same body) cannot answer with the
  hospital; the hope was a body that knows an opacity. The head learned it (AUC 0.98
  on the children's report split), but the TB head's lesion checks fell (lesion AUC on
  TB films 0.64 against 0.71, on NIH films 0.61 against 0.63, lesions removed flagged
  0.79 against 0.72; 14 epochs, folds 0-1), as with the NIH head summed in: a body
  shared with a whole-film task looks at whole films.
- **Measured and not shipped (session 17): processing at 84 epochs, and how the
  score is read.** The session-13 processing choice had been measured on an
  undertrained model; trained 84 epochs it still gained nothing (processed NIH
  normals flagged 0.28 against 0.20 and 0.24 for the shipped choice's two seeds,
  in-source AUC 0.93 against 0.95-0.96; folds 0-1). `build/tb_bundle_members.py`
  measures the shipped bundle itself, without training: its INT8 graph runs the five
  members as groups of one graph, and member k never trained on pool fold k, so every
  fold is held out by one member (the table's "as built and served" row, 5 folds).
  On those members, two ways of reading the score at serving were measured: averaged
  over the film and the map's three shifted copies (no change beyond 0.01 on any
  lesion check), and the map's peak less its mean (fewer NIH normals flagged, 0.17
  against 0.21, and tightly framed ones 0.21 against 0.30, but more lesion-removed TB
  films flagged, 0.33 against 0.27, and tightly framed TB films let go, 0.69 against
  0.80). Neither is served.
- **Measured (session 18): the served ensemble on the report split, a third hospital's
  films, a wider network.** Scored as the box serves it (five members averaged) on the
  report split's films, which no member saw, the lesion AUC on NIH films is 0.72
  (95 % CI 0.61-0.81) and on TB films 0.91: averaging the members does not make a
  lesion on another hospital's film easier to see. NIH normals with lesion-free TB
  lung pasted in score above plain ones (AUC 0.69): a foreign patch is itself some
  evidence to this model. Pasting TB lesions on children's normals as well (a third
  hospital's films with and without a lesion) gained nothing (lesion AUC on NIH films
  0.73 against 0.74 and 0.77 for the shipped choice's two seeds, folds 0-1) and
  flagged children's pneumonia more (0.14 against 0.03-0.05): not shipped. Every stage
  1.5 times as wide leaned more on the lesion on both folds (lesions removed flagged
  0.21 against 0.29 and 0.32, lesion AUC on TB films 0.92 against 0.90, on NIH films
  0.75 against 0.74 and 0.77), and is shipped in 2.3.0 (next point).
- **Every stage 1.5 times as wide (since 2.3.0):** 24-192 channels per stage, 16-128
  before. Judged on all five folds with the bundle's own members, each on the fold it
  never trained on (table, "2.3.0 as built and served"), against 2.2.0's: lesion AUC on
  TB films 0.93 against 0.90, better on every fold; on NIH films 0.75 against 0.73; TB
  films with their lesions removed flagged 0.23 against 0.27; NIH normals flagged 0.16
  against 0.21, processed ones 0.29 against 0.33; out-of-fold specificity 0.73 against
  0.68 at sensitivity 0.95. The cost: **tightly framed TB films are let go more often**
  (flagged 0.74 against 0.80, worse on four folds of five; 0.70 against 0.76 on the
  report split): a tightly collimated film of a TB patient is likelier to be missed,
  and the site's calibration cannot see it. Inference is about 2.2 times the
  arithmetic of 2.2.0 (`bench/models.py`: within the 50-ms budget). Served on the report
  split, the lesion AUC on NIH films is 0.72 (2.2.0: 0.72), on TB films 0.92 (0.91).
  The lost flags are not lost lesions: among held-out TB films whose radiologists'
  boxes the tight crop keeps whole, 2.3.0's members flag 0.73 (2.2.0's 0.81), as many
  as among all. Training with films framed from 0.8 to 1.3 of their size (0.85-1.15)
  flagged tight TB films 0.79 on folds 0-1 against 0.76 for the 2.3 choice trained the
  same way: less than two trainings of one choice differ (2.3.0's own members, 0.68 on
  those folds), so it is not shipped (table). Pasting lesion-free TB lung on 45 % of
  NIH normals (25 %), to teach that a foreign patch alone is not TB, left the lesion
  AUCs where they were (NIH films 0.75, TB films 0.93) and flagged NIH normals with a
  pasted TB lesion less (0.49 against 0.63): it discounts any foreign patch, lesion or
  not. Not shipped.
- **Measured (session 20): tight framing is framing, not detail.** The table's tight
  check cuts the 64-px film and brings it back to 64 px, so it also softens it.
  `build/tb_framing.py` takes the two apart on 2.3.0's own members (five folds, each
  member on the fold it never saw; flagged at the threshold that flags 0.90 of the
  same films uncut). TB films cut from their 512-px originals lose as many flags as in
  the table: 0.86 cut 5 % a side, 0.73 cut 10 %, 0.59 cut 15 %; cut top and bottom
  only 0.81, left and right only 0.83; softened to 52 px and not cut, 0.90: detail
  costs nothing. Framed looser (a black border of 10 % a side) they lose flags too
  (0.78), and with their outer 10 % blackened, the lungs where they were, more still
  (0.66). No held-out TB film has its map's strongest cell in the outer ring of the
  8 x 8 map: the border does not carry the lesion; the score reads the film's layout,
  where TBX11K's framing puts the upper zones. NIH normals cut 10 % a side are flagged 0.27
  (0.16 uncut), padded 0.18. A site whose films are framed unlike TBX11K's (tighter
  collimation above all) should expect fewer TB films flagged and calibrate on its
  own outcomes (`appliance calibrate`).
- **Measured and not shipped (session 20): framing drawn with one scale for both
  axes.** Training drew each axis's scale on its own, so a film framed tight on every
  side was rare (4 % of draws beyond 1.2 for the session-19 range). One scale for both
  axes from 0.8 to 1.35 (27 % of draws beyond 1.2), moved up to 10 % of the film: on
  folds 0-1, two trainings each, tightly framed TB films flagged 0.83 and 0.85 against
  0.76 and 0.72 for the 2.3 choice, tight NIH normals 0.23 and 0.14 (0.26 and 0.16).
  But both trainings leaned less on the lesion: TB films with their lesions removed
  flagged 0.28 and 0.29 against 0.21 and 0.22, lesion AUC on TB films 0.91 and 0.89
  against 0.92 and 0.93. The framing was bought with the lesion, so it is not shipped.
"""
