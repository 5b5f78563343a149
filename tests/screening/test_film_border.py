"""A chest film's flat border (collimation, padding) is left out of its screening."""

import glob
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import TESTS, testdata

from appliance.ingest.decode import decode_bytes, decode_file
from appliance.screening.film_border import exposed_box

TB_FILMS = sorted(glob.glob(str(TESTS / "data" / "tbx64" / "*.png")))[:12]


def film(path: str, side: int = 512) -> np.ndarray:
    grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    return cv2.resize(grey, (side, side), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def bordered(picture: np.ndarray, share: float, value: float) -> np.ndarray:
    """The film shrunk into the middle of its frame, a flat band of ``value`` around it
    ``share`` of each side deep (collimation, or an export's padding)."""
    h, w = picture.shape
    inner = cv2.resize(picture, (round(w * (1 - 2 * share)), round(h * (1 - 2 * share))),
                       interpolation=cv2.INTER_AREA)
    out = np.full_like(picture, value)
    y0, x0 = (h - inner.shape[0]) // 2, (w - inner.shape[1]) // 2
    out[y0:y0 + inner.shape[0], x0:x0 + inner.shape[1]] = inner
    return out


def as_file(pixels: np.ndarray):
    ok, png = cv2.imencode(".png", np.round(pixels * 255).astype(np.uint8))
    return decode_bytes(png.tobytes())


def test_films_without_a_border_are_left_as_they_are():
    assert exposed_box(decode_file(testdata("RG1_UNCR.dcm")).pixels) is None
    assert all(exposed_box(film(path)) is None for path in TB_FILMS)


@pytest.mark.parametrize("share, value", [(0.08, 0.0), (0.15, 0.0), (0.08, 1.0)])
def test_the_box_is_the_exposed_film(share, value):
    framed = bordered(film(TB_FILMS[0]), share, value)
    top, bottom, left, right = exposed_box(framed)
    edge = round(512 * share)
    for found, true in ((top, edge), (bottom, 512 - edge), (left, edge), (right, 512 - edge)):
        assert abs(found - true) <= 512 / 128 + 1  # one row of the 128-px copy


@pytest.mark.parametrize("share, value", [(0.08, 1.0), (0.08, 0.0)])
def test_a_border_does_not_change_the_adult_score(screener, share, value):
    """TBX11K TB films held out from training: a white border of 8 % of each side took
    the median adult score from 93 to 67 before the border was left out."""
    changes = []
    for path in TB_FILMS:
        plain = screener.screen(as_file(film(path)), {}, population="adult")
        framed = screener.screen(as_file(bordered(film(path), share, value)), {},
                                 population="adult")
        assert framed.route == "chest_xray" and plain.route == "chest_xray"
        assert any("border was left out" in line for line in framed.evidence)
        changes.append(framed.score - plain.score)
    # what is left is resampling (over all 107 films: median 0-1 points, no drift)
    assert np.median(np.abs(changes)) <= 2 and abs(np.mean(changes)) <= 3, changes


def test_an_extremity_cr_is_still_refused(screener):
    """NEMA's RG3 (a CR of an extremity, collimated), sent as a picture without tags:
    refused by the router. (A second look at the exposed film, measured and not kept,
    called it a chest film at 0.96.)"""
    pixels = decode_file(testdata("RG3_UNCR.dcm")).pixels
    result = screener.screen(as_file(pixels), {}, population="adult")
    assert result.route == "refused", result.as_dict()


def test_the_map_lies_over_the_film_not_its_border(screener, models, monkeypatch):
    # the map's place, whatever the shipped verdict: set for this test only, as
    # tests/screening/test_heatmaps.py does
    verdict = models.get("cxr-adult-abnormal").bundle.manifest["heatmap"]
    monkeypatch.setitem(verdict, "validated", True)
    framed = bordered(film(TB_FILMS[0]), 0.1, 1.0)
    result = screener.screen(as_file(framed), {}, overlay_size=(256, 256), population="adult")
    assert result.heatmap is not None
    alpha = result.heatmap[..., 3]
    band = round(256 * 0.1) - 2
    assert alpha[:band].max() == 0 and alpha[-band:].max() == 0
    assert alpha[:, :band].max() == 0 and alpha[:, -band:].max() == 0
    assert alpha[band:-band, band:-band].max() > 0


def test_a_sharp_cr_keeps_its_score_in_black_padding(screener):
    """NEMA's RG1 (1955 x 1841 CR) shrunk to 0.8 of its size in black padding, as an
    export sends it: scored as the film itself."""
    pixels = decode_file(testdata("RG1_UNCR.dcm")).pixels
    h, w = pixels.shape
    small = cv2.resize(pixels, (w * 4 // 5, h * 4 // 5), interpolation=cv2.INTER_AREA)
    padded = np.zeros_like(pixels)
    padded[h // 10:h // 10 + small.shape[0], w // 10:w // 10 + small.shape[1]] = small
    plain = screener.screen(as_file(pixels), {}, population="adult")
    framed = screener.screen(as_file(padded), {}, population="adult")
    assert framed.route == "chest_xray"
    assert abs(framed.score - plain.score) <= 4, (plain.score, framed.score)


def test_path_helpers_are_real_files():
    assert TB_FILMS and all(Path(p).is_file() for p in TB_FILMS)
