"""A retina photo's FHIR Observations name the eye (hub/fhir/resources.py, issue 24):
bodySite from the image's laterality, SNOMED CT right/left eye structure, validated by
fhir.resources; a chest X-ray's and an eye not known carry none."""

from __future__ import annotations

import pytest

from appliance.hub.fhir.resources import observations


def payload(route: str, laterality: str | None) -> dict:
    return {
        "route": route,
        "probability": 0.8,
        "threshold": 0.5,
        "score": 80,
        "triage": "review",
        "model": {"name": "fundus-referable-dr", "version": "1.0.0"},
        "image": {"laterality": laterality},
    }


COMMON = {"status": "preliminary", "subject": {"display": "patient"}}


@pytest.mark.parametrize(("laterality", "code"), [("R", "18944008"), ("l", "8966001")])
def test_each_observation_of_a_retina_photo_names_its_eye(laterality, code):
    made = observations(payload("fundus", laterality), COMMON)
    assert len(made) == 3
    for observation in made:
        coding = observation.bodySite.coding[0]
        assert (coding.system, coding.code) == ("http://snomed.info/sct", code)


@pytest.mark.parametrize(("route", "laterality"), [("fundus", None), ("fundus", "B"),
                                                   ("chest_xray", "R")])
def test_no_eye_where_none_is_known_or_the_image_is_not_a_retina(route, laterality):
    assert all(o.bodySite is None for o in observations(payload(route, laterality), COMMON))
