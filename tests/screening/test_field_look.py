"""The second look at a small lit field in a black frame (issue 26): what is cut out,
what is left whole, and what the screening path does with it."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import FUNDUS_DIR

from appliance.inference.preprocess import fundus_frame
from appliance.ingest.decode import decode_bytes
from appliance.screening.field_look import MIN_FIELD_PX, lit_field


def rgb01(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255


def in_black_frame(picture: np.ndarray, share: float, frame_px: int = 1600,
                   grey: float = 0.0) -> np.ndarray:
    """``picture`` scaled to ``share`` of a 4:3 frame's width, centred, on black (or
    ``grey``): a phone adapter's or hand-held camera's small field."""
    h, w = picture.shape[:2]
    scale = frame_px * share / w
    small = cv2.resize(picture, (round(w * scale), round(h * scale)),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    out = np.full((frame_px * 3 // 4, frame_px) + picture.shape[2:], grey, np.float32)
    y0, x0 = (out.shape[0] - small.shape[0]) // 2, (out.shape[1] - small.shape[1]) // 2
    out[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return out


def cut_round(picture: np.ndarray) -> np.ndarray:
    """The picture seen through a round opening: a disc of it, black around."""
    h, w = picture.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (0.48 * min(h, w)) ** 2
    return picture * (disc[..., None] if picture.ndim == 3 else disc)


def as_camera_file(pixels01: np.ndarray):
    """Encoded and decoded as a camera card's JPEG would be."""
    bgr = cv2.cvtColor(np.round(np.clip(pixels01, 0, 1) * 255).astype(np.uint8),
                       cv2.COLOR_RGB2BGR) if pixels01.ndim == 3 else pixels01
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return decode_bytes(jpeg.tobytes())


def look(image: np.ndarray) -> np.ndarray | None:
    return lit_field(image, fundus_frame(image))


@pytest.mark.parametrize("name", ["IDRiD_003.jpg", "hrf_07_h.jpg"])
@pytest.mark.parametrize("share", [0.3, 0.45])
def test_a_small_field_in_a_black_frame_is_cut_out_tight(name, share):
    photo = rgb01(FUNDUS_DIR / name)
    framed = in_black_frame(photo, share)
    field = look(framed)
    assert field is not None
    fh, fw = field.shape[:2]
    h, w = framed.shape[:2]
    assert fw <= share * w * 1.02 and fh <= share * w * photo.shape[0] / photo.shape[1] * 1.02
    bright = framed.max(axis=2) > 0.1  # the whole field, not a part of it
    assert (field.max(axis=2) > 0.1).sum() >= 0.99 * bright.sum()


@pytest.mark.parametrize("name", ["IDRiD_003.jpg", "hrf_07_h.jpg"])
def test_a_whole_camera_frame_is_left_whole(name):
    assert look(rgb01(FUNDUS_DIR / name)) is None


def test_a_picture_pasted_square_in_black_is_left_whole():
    """A letterboxed or pasted picture is a rectangle, not a camera's round field."""
    picture = rgb01(FUNDUS_DIR / "hrf_07_h.jpg")
    h, w = picture.shape[:2]
    square = picture[:, (w - h) // 2:(w - h) // 2 + h]
    assert look(in_black_frame(square, 0.4)) is None


def test_a_field_on_a_grey_surround_is_left_whole():
    """Not black around: the frame has parts of its own; nothing is cut from it."""
    assert look(in_black_frame(rgb01(FUNDUS_DIR / "IDRiD_003.jpg"), 0.4, grey=0.3)) is None


def test_a_field_too_small_to_be_a_photograph_is_left_whole():
    share = (MIN_FIELD_PX - 8) / 800
    assert look(in_black_frame(rgb01(FUNDUS_DIR / "IDRiD_003.jpg"), share, 800)) is None


@pytest.mark.parametrize("name", ["IDRiD_003.jpg", "hrf_07_h.jpg"])
def test_a_small_field_photo_is_looked_at_again_and_screened(screener, name):
    """A phone adapter's photo: the retina 0.4 of a 4:3 frame's width on black. The
    router alone refused every such photo ("not a chest X-ray or a retina photograph");
    the second look at the field routes it, and the quality check and the model run on
    the field as on any camera's."""
    image = as_camera_file(in_black_frame(rgb01(FUNDUS_DIR / name), 0.4))
    result = screener.screen(image, {})
    assert result.route == "fundus", result.as_dict()
    assert any("looked again" in line for line in result.evidence)
    assert result.quality["gradable"] and result.model["name"] == "fundus-referable-dr"
    assert result.score is not None


def with_text_in_the_black(framed: np.ndarray) -> np.ndarray:
    """What a camera or a phone app prints in the black: date, eye, clinic."""
    out = np.round(framed * 255).astype(np.uint8)
    h, w = out.shape[:2]
    for (x, y), text in (((0.02, 0.06), "2026-12-06 10:41"), ((0.02, 0.96), "OD 45deg ID 0042"),
                         ((0.75, 0.06), "CLINIC 3")):
        cv2.putText(out, text, (int(x * w), int(y * h)), cv2.FONT_HERSHEY_SIMPLEX, 1.3,
                    (255, 255, 255), 2, cv2.LINE_AA)
    return out.astype(np.float32) / 255


def test_text_printed_in_the_black_does_not_stop_the_second_look(screener):
    framed = with_text_in_the_black(in_black_frame(rgb01(FUNDUS_DIR / "IDRiD_003.jpg"), 0.4))
    field = look(framed)
    assert field is not None and field.shape[0] < 0.5 * framed.shape[0]
    result = screener.screen(as_camera_file(framed), {})
    assert result.route == "fundus" and result.score is not None, result.as_dict()


def test_tags_that_say_chest_get_no_second_look(screener):
    image = as_camera_file(in_black_frame(rgb01(FUNDUS_DIR / "IDRiD_003.jpg"), 0.4))
    result = screener.screen(image, {"modality": "DX", "body_part": "CHEST"})
    assert result.route != "fundus"
    assert not any("looked again" in line for line in result.evidence)


def _skimage_pictures() -> dict[str, np.ndarray]:
    import skimage.data as data

    pictures = {
        "astronaut": data.astronaut(), "face": data.astronaut()[20:220, 140:320],
        "cat": data.chelsea(), "coffee": data.coffee(), "page": data.page(),
        "camera": data.camera(), "moon": data.moon(), "rocket": data.rocket(),
        "coins": data.coins(), "text": data.text(), "ihc": data.immunohistochemistry(),
    }
    return {k: v.astype(np.float32) / 255 for k, v in pictures.items()}


@pytest.mark.parametrize("how", ["pasted square", "cut round"])
def test_pictures_in_a_black_frame_never_reach_the_fundus_model(screener, how):
    """Faces, a cat, a page, text, a photo through a round opening in a black frame: the
    second look shows the router the picture alone, and it is no retina (measured: none
    routed to the retina path either way)."""
    reached = []
    for name, picture in _skimage_pictures().items():
        shaped = cut_round(picture) if how == "cut round" else picture
        result = screener.screen(as_camera_file(in_black_frame(shaped, 0.4)), {})
        if result.route == "fundus" or (result.model or {}).get("name") == "fundus-referable-dr":
            reached.append(name)
    assert not reached


def test_small_faces_cut_round_in_a_black_frame_never_reach_the_fundus_model(screener):
    """scikit-image's LFW faces (25 px, blown up) seen through a round opening: the
    router, looking again, takes some for a retina (measured: 9 of 40), and the quality
    check refuses every one of them; none is scored by the fundus model."""
    import skimage

    faces = np.load(Path(skimage.__file__).parent / "data" / "lfw_subset.npy")[:100:5]
    for face in faces:
        result = screener.screen(as_camera_file(in_black_frame(cut_round(face), 0.4)), {})
        assert (result.model or {}).get("name") != "fundus-referable-dr", result.as_dict()
