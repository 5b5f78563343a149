"""Adult or child: the choice of chest model, as a table (pure: no models, no files)."""

from __future__ import annotations

import pytest

from appliance.errors import ConfigError
from appliance.screening.gate import age_in_years
from appliance.screening.population import (
    BABY_CAUTION,
    OLDER_CHILD_CAUTION,
    Population,
    choose_population,
    population_caution,
)

# (age in years, choice made for the image, by, site setting) -> (population, source, model)
TABLE = [
    # The age the X-ray gives decides, whatever was chosen or set.
    (45.0, None, "operator", "adult", ("adult", "dicom_age", "cxr-adult-abnormal")),
    (16.0, None, "operator", "child", ("adult", "dicom_age", "cxr-adult-abnormal")),
    (15.99, None, "operator", "adult", ("child", "dicom_age", "cxr-pneumonia")),
    (3.0, "adult", "operator", "ask", ("child", "dicom_age", "cxr-pneumonia")),
    (70.0, "child", "cli", "child", ("adult", "dicom_age", "cxr-adult-abnormal")),
    (0.02, None, "operator", "ask", ("child", "dicom_age", "cxr-pneumonia")),
    # No age: the choice made for this image, by staff or on the command line.
    (None, "child", "operator", "adult", ("child", "operator", "cxr-pneumonia")),
    (None, "adult", "operator", "ask", ("adult", "operator", "cxr-adult-abnormal")),
    (None, "child", "cli", "adult", ("child", "cli", "cxr-pneumonia")),
    # No age, no choice: the site setting; "ask" leaves it undecided.
    (None, None, "operator", "adult", ("adult", "site_setting", "cxr-adult-abnormal")),
    (None, None, "operator", "child", ("child", "site_setting", "cxr-pneumonia")),
    (None, None, "operator", "ask", (None, "site_setting", None)),
]


@pytest.mark.parametrize("age, chosen, by, setting, expected", TABLE)
def test_the_population_table(age, chosen, by, setting, expected):
    decided = choose_population(age, chosen, by, setting)
    assert (decided.name, decided.source, decided.model) == expected


@pytest.mark.parametrize(
    "patient_age, birth, study, population",
    [
        ("045Y", None, None, "adult"),
        ("003Y", None, None, "child"),
        ("016Y", None, None, "adult"),
        ("191M", None, None, "child"),  # 15 years 11 months
        (None, "19400305", "20040826", "adult"),  # RG1's patient
        (None, "20100101", "20251231", "child"),  # the day before the 16th birthday
    ],
)
def test_dicom_ages_from_the_age_tag_or_the_birth_date(patient_age, birth, study, population):
    age = age_in_years(patient_age, birth, study)
    assert choose_population(age, site_setting="ask").name == population


def test_a_site_setting_or_choice_outside_the_list_is_refused():
    with pytest.raises(ConfigError, match="not one of adult, child, ask"):
        choose_population(None, site_setting="adults")
    with pytest.raises(ValueError):
        choose_population(None, "teenager")
    with pytest.raises(ValueError):
        choose_population(None, "adult", chosen_by="site_setting")


@pytest.mark.parametrize(
    "population, age, caution",
    [
        (Population("child", "dicom_age"), 3.0, None),
        (Population("child", "dicom_age"), 1.0, None),
        (Population("child", "dicom_age"), 5.99, None),
        (Population("child", "dicom_age"), 6.0, OLDER_CHILD_CAUTION),
        (Population("child", "dicom_age"), 15.0, OLDER_CHILD_CAUTION),
        (Population("child", "dicom_age"), 0.5, BABY_CAUTION),
        (Population("child", "operator"), None, None),  # no age: nothing to caution about
        (Population("adult", "dicom_age"), 64.0, None),
        (Population("adult", "site_setting"), None, None),
    ],
)
def test_a_plain_caution_outside_the_ages_a_model_was_validated_on(population, age, caution):
    assert population_caution(population, age) == caution
