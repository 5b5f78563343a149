"""The fitness gate's decisions from DICOM tags and router probabilities (pure logic)."""

import pytest

from appliance.screening.gate import CHEST, FUNDUS, REFUSED, decide

CHESTY = {"chest_xray": 0.97, "fundus_photo": 0.01, "other": 0.02}
EYE = {"chest_xray": 0.0, "fundus_photo": 0.99, "other": 0.01}
OTHER = {"chest_xray": 0.01, "fundus_photo": 0.01, "other": 0.98}
UNSURE = {"chest_xray": 0.45, "fundus_photo": 0.15, "other": 0.40}


@pytest.mark.parametrize(
    "tags, router, route, reason",
    [
        ({"modality": "CR", "body_part": "CHEST", "view_position": "PA"}, CHESTY, CHEST, None),
        ({"modality": "DX", "body_part": None}, CHESTY, CHEST, None),
        ({}, CHESTY, CHEST, None),
        ({}, EYE, FUNDUS, None),
        ({"modality": "OP"}, EYE, FUNDUS, None),
        ({"modality": "CT"}, CHESTY, REFUSED, "This is a CT scan"),
        ({"modality": "US"}, OTHER, REFUSED, "ultrasound"),
        ({"modality": "CR", "body_part": "HAND"}, CHESTY, REFUSED, "this X-ray is of the hand"),
        (
            {"modality": "CR", "body_part": "CHEST", "view_position": "LL"},
            CHESTY,
            REFUSED,
            "side (lateral) view",
        ),
        ({"modality": "CR", "body_part": "CHEST"}, EYE, REFUSED, "does not look like one"),
        ({"modality": "OP"}, OTHER, REFUSED, "does not look like a retina"),
        ({}, OTHER, REFUSED, "Not a chest X-ray or a retina photograph"),
        ({}, UNSURE, REFUSED, "cannot tell what this image shows"),
    ],
)
def test_gate_decisions(tags, router, route, reason):
    decision = decide(router, tags, min_confidence=0.6)
    assert decision.route == route
    if reason is None:
        assert decision.reason is None
    else:
        assert reason in decision.reason and decision.hints  # always a retake hint


def test_tags_that_agree_lower_the_confidence_needed():
    """A chest-tagged CR the router is only half sure of is still screened as a chest."""
    half = {"chest_xray": 0.55, "fundus_photo": 0.05, "other": 0.40}
    assert decide(half, {"modality": "CR", "body_part": "CHEST"}, 0.6).route == CHEST
    assert decide(half, {}, 0.6).route == REFUSED


@pytest.mark.parametrize(
    "age, born, seen, years",
    [
        ("045Y", None, None, 45),
        ("018M", None, None, 1.5),
        ("030W", None, None, 30 * 7 / 365.25),
        (None, "19400305", "20040826", 64.47),
        (None, "20200101", "20230101", 3.0),
        (None, None, "20230101", None),
        ("bad", "1940", "2004", None),
        (None, "20300101", "20040826", None),  # born after the study: nonsense, not an age
    ],
)
def test_age_in_years_from_dicom_tags(age, born, seen, years):
    from appliance.screening.gate import age_in_years

    result = age_in_years(age, born, seen)
    assert (result is None) if years is None else result == pytest.approx(years, abs=0.01)


@pytest.mark.parametrize("tags", [{}, {"modality": "OP"}, {"modality": "CR", "body_part": "CHEST"}])
def test_a_blank_frame_is_refused_whatever_the_router_tags_or_a_clinician_say(tags):
    """Issue 26: router 1.2.0 reads a black frame as a retina (0.997). A blank frame is
    refused as blank, and no clinician can choose a route for it (nothing to screen)."""
    from appliance.screening.gate import BLANK, BY_BLANK

    for chosen in (None, FUNDUS, CHEST):
        decision = decide(EYE, tags, 0.5, chosen=chosen, blank=True)
        assert (decision.route, decision.reason, decision.source) == (REFUSED, BLANK, BY_BLANK)


def test_tags_that_rule_an_image_out_still_name_it_when_it_is_blank():
    assert "CT scan" in decide(EYE, {"modality": "CT"}, 0.5, blank=True).reason
