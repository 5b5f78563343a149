"""The screener on real images with the committed bundles (ONNX Runtime, CPU)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import FUNDUS_DIR, TESTS, adult_maps_shown, testdata

from appliance.ingest.decode import decode_bytes
from appliance.ingest.dicom import dicom_record, read_dicom
from appliance.screening.heatmaps import HEATMAP_NOT_SHOWN

CXR64 = sorted((TESTS / "data" / "cxr64").rglob("*.png"))


def tags_of(raw: bytes) -> dict:
    record = dicom_record(read_dicom(raw), sha256="0" * 64, size_bytes=len(raw), source="t")
    return {
        k: getattr(record, k) for k in ("modality", "body_part", "view_position", "sop_class_uid")
    }


def test_adult_chest_cr_is_screened_with_score_triage_timings_and_its_map_if_shown(screener):
    raw = testdata("RG1_UNCR.dcm").read_bytes()
    image = decode_bytes(raw)
    result = screener.screen(image, tags_of(raw), overlay_size=(512, 543))
    assert result.route == "chest_xray" and result.reason is None
    assert 0.0 <= result.probability <= 1.0 and result.score == round(result.probability * 100)
    assert result.triage in {"urgent", "review", "routine"}
    # No age among these tags: the site's default population, adult, and its model.
    assert (result.population, result.population_source) == ("adult", "site_setting")
    assert result.model["name"] == "cxr-adult-abnormal" and len(result.model["sha256"]) == 64
    manifest = screener.models.get("cxr-adult-abnormal").bundle.manifest
    assert result.threshold == manifest["operating_points"]["suggested"]["threshold"]
    assert result.backend == "onnxruntime"
    assert set(result.timings_ms) == {"gate", "preprocess", "infer", "postprocess"}
    # The map goes with the score only where the bundle's maps passed their checks
    # (manifest "heatmap", from models/heatmaps/cxr-adult-abnormal.json): else the
    # score, and why.
    shown = adult_maps_shown()
    assert (result.heatmap is not None) is shown
    assert result.as_dict()["heatmap_validated"] is shown
    assert any("Heatmap not shown" in hint for hint in result.hints) is not shown
    assert "decision support" in result.as_dict()["decision_support"].lower()


def test_a_shift_averaged_map_keeps_the_score_and_follows_the_film(screener, monkeypatch):
    """Issue 23: where the adult bundle's shown map is shift-averaged (its manifest's
    ``shift_average_px``), the model runs the film with three shifted copies in one
    batch: the score is the film's own, the map is drawn at the input's 64 px (the plain
    map: the network's 8 x 8 grid); a map not shown costs no copies."""
    raw = testdata("RG1_UNCR.dcm").read_bytes()
    image, tags = decode_bytes(raw), tags_of(raw)
    verdict = screener.models.get("cxr-adult-abnormal").bundle.manifest["heatmap"]
    monkeypatch.setitem(verdict, "validated", True)
    monkeypatch.setitem(verdict, "shift_average_px", None)
    plain = screener.screen(image, tags, overlay_size=(128, 128))
    monkeypatch.setitem(verdict, "shift_average_px", 4)
    averaged = screener.screen(image, tags, overlay_size=(128, 128))
    assert averaged.probability == pytest.approx(plain.probability, abs=1e-6)
    assert plain.heat.cam.shape == (8, 8) and averaged.heat.cam.shape == (64, 64)
    assert averaged.heatmap is not None and averaged.heatmap.shape[:2] == (128, 128)
    # the averaged map is the plain one's neighbour, not another map
    upsampled = np.maximum(cv2.resize(plain.heat.cam, (64, 64)), 0)
    assert np.corrcoef(upsampled.ravel(), averaged.heat.cam.ravel())[0, 1] > 0.7
    monkeypatch.setitem(verdict, "validated", False)
    assert screener.screen(image, tags).heat.cam.shape == (8, 8)


def test_site_threshold_and_triage_levels(screener, config):
    from appliance.screening.pipeline import Screener

    image = decode_bytes(CXR64[0].read_bytes())
    # Each chest model has its own setting: the child model's never moves the adult's.
    strict = Screener(
        screener.models,
        config.with_overrides(
            cxr_threshold=0.999, cxr_adult_threshold=0.0001, urgent_min_specificity=1.0
        ),
    )
    lenient = Screener(
        screener.models,
        config.with_overrides(
            cxr_threshold=0.0001, cxr_adult_threshold=0.999, urgent_min_specificity=1.0
        ),
    )
    assert strict.screen(image, {}, population="child").triage == "routine"
    assert lenient.screen(image, {}, population="child").triage == "review"  # below urgent
    assert strict.screen(image, {}, population="child").threshold == 0.999
    assert strict.screen(image, {}, population="adult").threshold == 0.0001
    assert lenient.screen(image, {}, population="adult").threshold == 0.999


def test_a_threshold_applied_while_workers_screen_reaches_every_worker(screener, config):
    """``appliance calibrate --apply`` writes config.toml while the box runs: every
    worker's next image gets the new threshold. Two workers share the screener; the one
    that arrived while the other re-read the file kept the old threshold (CI, a child
    screened at 0.85 after 0.975 was applied)."""
    import threading
    import time

    from appliance.config import load_config, save_settings

    model = screener.models.get("cxr-pneumonia")
    other_process = load_config(config.data_dir)
    for step in range(12):
        value = round(0.5 + step / 50, 3)
        time.sleep(0.02)  # a new file time
        save_settings(other_process, {"cxr_threshold": value})
        start, seen = threading.Barrier(4), []

        def next_image(start=start, seen=seen):
            start.wait()
            seen.append(screener.threshold(model))

        workers = [threading.Thread(target=next_image) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert seen == [value] * 4, (step, seen)


def test_paediatric_validation_images_get_sensible_scores(screener):
    """Kermany validation images (one per held-out patient): the model separates them."""
    import csv

    with open(TESTS / "data" / "cxr64" / "labels.csv") as fh:
        labels = {row["file"]: int(row["pneumonia"]) for row in csv.DictReader(fh)}
    scores = {0: [], 1: []}
    for path in CXR64:
        key = path.relative_to(TESTS / "data" / "cxr64").as_posix()
        if key not in labels:
            continue
        result = screener.screen(decode_bytes(path.read_bytes()), {}, population="child")
        assert result.route == "chest_xray" and result.model["name"] == "cxr-pneumonia"
        scores[labels[key]].append(result.probability)
    assert scores[0] and scores[1]
    assert np.median(scores[1]) > 0.5 > np.median(scores[0])


@pytest.mark.parametrize("name", ["hrf_07_h.jpg", "IDRiD_003.jpg"])
def test_fundus_photo_goes_through_quality_then_the_fundus_model(screener, name):
    image = decode_bytes((FUNDUS_DIR / name).read_bytes())
    result = screener.screen(image, {}, overlay_size=(512, 341))
    assert result.route == "fundus" and result.quality["gradable"]
    assert result.model["name"] == "fundus-referable-dr"
    assert "quality" in result.timings_ms and result.heatmap.shape == (341, 512, 4)
    assert result.heatmap.dtype == np.uint8 and result.as_dict()["heatmap_validated"] is True


def test_a_narrow_field_camera_photo_is_screened_not_sent_back(screener):
    """A 35 degree camera frames the retina with its circle clipped on every side
    (a centred crop of a real photo): routed, gradable and scored (issue 26; before,
    "retina not fully in the picture" refused every one)."""
    import cv2

    full = cv2.imread(str(FUNDUS_DIR / "IDRiD_003.jpg"))
    h, w = full.shape[:2]
    narrow = full[h // 8:h - h // 8, w // 8:w - w // 8]
    ok, jpeg = cv2.imencode(".jpg", narrow, [cv2.IMWRITE_JPEG_QUALITY, 92])
    result = screener.screen(decode_bytes(jpeg.tobytes()), {})
    assert result.route == "fundus" and result.quality["gradable"], result.as_dict()
    assert result.model["name"] == "fundus-referable-dr" and result.score is not None


@pytest.mark.parametrize("name", ["IDRiD_008.jpg", "hrf_12_h.jpg"])
def test_a_retina_filling_the_frame_is_screened_not_called_something_else(screener, name):
    """A camera or phone adapter that crops to a rectangle inside the field leaves no
    black at all (here a 4:3 rectangle cut from inside a real photo's circle): routed,
    gradable and scored (issue 26; router 1.2.0 said "not a chest X-ray or a retina
    photograph" of every one)."""
    import cv2

    from models.training.router import inside_field  # the shift the router's build holds

    inside = inside_field(cv2.imread(str(FUNDUS_DIR / name)))
    assert (inside.max(axis=2) < 15).mean() < 0.005  # no black left
    ok, jpeg = cv2.imencode(".jpg", inside, [cv2.IMWRITE_JPEG_QUALITY, 92])
    result = screener.screen(decode_bytes(jpeg.tobytes()), {})
    assert result.route == "fundus" and result.quality["gradable"], result.as_dict()
    assert result.model["name"] == "fundus-referable-dr" and result.score is not None


def test_blurred_fundus_is_refused_with_a_retake_hint_and_no_score(screener):
    import cv2

    image = decode_bytes((FUNDUS_DIR / "hrf_07_h.jpg").read_bytes())
    image.pixels = cv2.GaussianBlur(image.pixels, (0, 0), 12)
    result = screener.screen(image, {})
    assert result.route == "refused"
    assert "blurred" in result.reason and "retake" in result.reason
    assert result.score is None and result.probability is None and result.triage is None


def test_a_black_photo_is_refused_as_blank_and_never_reaches_the_fundus_model(screener):
    """Issue 26: router 1.2.0 scores a black frame as a retina photo (0.997)."""
    import cv2

    ok, png = cv2.imencode(".png", np.zeros((480, 640, 3), np.uint8))
    result = screener.screen(decode_bytes(png.tobytes()), {}, route="fundus")
    assert (result.route, result.route_source) == ("refused", "blank")
    assert "blank" in result.reason and "lens cap" in result.hints[0]
    assert result.quality is None and result.score is None and result.model is None


@pytest.mark.parametrize(
    "name, words",
    [
        ("RG3_UNCR.dcm", "this X-ray is of the extremity"),
        ("CT_small.dcm", "CT scan"),
        ("US1_UNCR.dcm", "ultrasound"),
        ("SC_rgb.dcm", "Not a chest X-ray or a retina photograph"),
    ],
)
def test_what_the_models_are_not_for_is_refused_politely(screener, name, words):
    raw = testdata(name).read_bytes()
    result = screener.screen(decode_bytes(raw), tags_of(raw))
    assert result.route == "refused" and words in result.reason
    assert result.score is None and result.hints


@pytest.mark.parametrize(
    "age, model, caution",
    [
        (64.5, "cxr-adult-abnormal", None),  # RG1's patient: born 1940, X-rayed 2004
        (16.0, "cxr-adult-abnormal", None),
        (3.0, "cxr-pneumonia", None),  # the ages the child model was validated on
        (9.0, "cxr-pneumonia", "OLDER_CHILD_CAUTION"),
        (0.5, "cxr-pneumonia", "BABY_CAUTION"),
    ],
)
def test_the_age_picks_the_model_and_a_caution_marks_ages_outside_its_validation(
    screener, age, model, caution
):
    from appliance.screening import population

    raw = testdata("RG1_UNCR.dcm").read_bytes()
    # The age wins over any choice made for the image.
    result = screener.screen(
        decode_bytes(raw), {**tags_of(raw), "patient_age_years": age}, population="child"
    )
    assert result.route == "chest_xray" and result.score is not None
    assert result.model["name"] == model and result.population_source == "dicom_age"
    cautions = [hint for hint in result.hints if hint != HEATMAP_NOT_SHOWN]  # chest maps: off
    assert cautions == ([getattr(population, caution)] if caution else [])


def test_an_x_ray_without_an_age_waits_where_the_site_asks(screener, config):
    from appliance.screening.pipeline import NEEDS_POPULATION, Screener

    asking = Screener(screener.models, config.with_overrides(chest_population="ask"))
    image = decode_bytes(CXR64[0].read_bytes())
    waiting = asking.screen(image, {}, overlay_size=(64, 64))
    assert waiting.route == "chest_xray" and waiting.needs_population
    assert waiting.reason == NEEDS_POPULATION and waiting.population is None
    assert waiting.score is None and waiting.model is None and waiting.heatmap is None
    chosen = asking.screen(image, {}, population="child")
    assert not chosen.needs_population and chosen.model["name"] == "cxr-pneumonia"
    assert (chosen.population, chosen.population_source) == ("child", "operator")
    # An age needs no choice; a fundus photo has no population at all.
    aged = asking.screen(image, {"patient_age_years": 40.0})
    assert aged.model["name"] == "cxr-adult-abnormal" and not aged.needs_population
    eye = asking.screen(decode_bytes((FUNDUS_DIR / "hrf_07_h.jpg").read_bytes()), {})
    assert eye.route == "fundus" and eye.population is None and not eye.needs_population


def test_a_mistyped_site_setting_stops_the_screener_saying_why(screener, config):
    from appliance.errors import ConfigError
    from appliance.screening.pipeline import Screener

    with pytest.raises(ConfigError, match="chest_population.*'adults'"):
        Screener(screener.models, config.with_overrides(chest_population="adults"))


def test_a_film_is_squashed_once_for_the_router_and_the_chest_model(screener):
    """Issue 28: the router and the adult chest model both take the film to 64 x 64, the
    drift measures to 128 px: each size is made once per image and shared, and the
    score is the one an image without shared copies gets."""
    raw = testdata("RG1_UNCR.dcm").read_bytes()
    tags = tags_of(raw)
    shared = decode_bytes(raw, max_side=1024)
    first = screener.screen(shared, tags, overlay_size=(256, 241))
    sizes = sorted(size for (_, size) in shared.resized)  # one entry per size made
    assert len(sizes) == 2 and sizes[0] == (64, 64) and max(sizes[1]) == 128, sizes
    alone = decode_bytes(raw, max_side=1024)
    again = screener.screen(alone, tags, overlay_size=(256, 241))
    assert first.probability == again.probability and first.router == again.router
