"""Adult or child: which chest model scores an X-ray, and why.

The patient's age the X-ray itself gives (DICOM PatientAge, else BirthDate and
StudyDate) decides: 16 or older is an adult. An image without an age (a JPEG or PNG, a
camera card, a DICOM that does not say) is screened as staff chose for it (on the study
page, or ``appliance screen --population``), else as the site setting
``chest_population`` says: ``adult`` (the default), ``child``, or ``ask``: then nothing
is guessed and the X-ray waits for staff to choose.

Pure: an age, a choice and a setting in; a decision out. No files, no database.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.errors import ConfigError
from appliance.screening.models import CXR, CXR_ADULT

ADULT, CHILD, ASK = "adult", "child", "ask"
POPULATIONS = (ADULT, CHILD)
SITE_CHOICES = (ADULT, CHILD, ASK)
ADULT_YEARS = 16

# How the population was decided (results.population_source, ``--json``).
DICOM_AGE, OPERATOR, CLI, SITE_SETTING = "dicom_age", "operator", "cli", "site_setting"
SOURCES = (DICOM_AGE, OPERATOR, CLI, SITE_SETTING)

CHEST_MODEL = {ADULT: CXR_ADULT, CHILD: CXR}

# The paediatric model learned from children aged 1 to 5 (Kermany): for a child outside
# that range it still gives a score, with one of these plain cautions beside it.
CHILD_MODEL_YEARS = (1.0, 6.0)  # from 1 year up to (not including) the 6th birthday
OLDER_CHILD_CAUTION = (
    "Trained on X-rays of young children (1 to 5 years): for an older child, read this "
    "score with extra caution."
)
BABY_CAUTION = (
    "Trained on X-rays of young children (1 to 5 years): for a baby under 1 year, read "
    "this score with extra caution."
)


@dataclass(frozen=True)
class Population:
    name: str | None  # adult or child; None: staff must choose first
    source: str  # one of SOURCES

    @property
    def model(self) -> str | None:
        """The bundle that scores this population's chest X-rays (None while undecided)."""
        return CHEST_MODEL.get(self.name) if self.name else None


def check_site_setting(value: str) -> str:
    """``chest_population`` as configured, or a ConfigError that says what is allowed."""
    if value not in SITE_CHOICES:
        raise ConfigError(
            f"setting chest_population: {value!r} is not one of {', '.join(SITE_CHOICES)}"
        )
    return value


def choose_population(
    age_years: float | None,
    chosen: str | None = None,
    chosen_by: str = OPERATOR,
    site_setting: str = ADULT,
) -> Population:
    """The population a chest X-ray is screened as: its age, else the choice made for
    it (``chosen`` by ``chosen_by``: operator or cli), else the site setting."""
    if age_years is not None:
        return Population(ADULT if age_years >= ADULT_YEARS else CHILD, DICOM_AGE)
    if chosen is not None:
        if chosen not in POPULATIONS or chosen_by not in (OPERATOR, CLI):
            raise ValueError(f"cannot choose population {chosen!r} by {chosen_by!r}")
        return Population(chosen, chosen_by)
    setting = check_site_setting(site_setting)
    return Population(None if setting == ASK else setting, SITE_SETTING)


def population_caution(population: Population, age_years: float | None) -> str | None:
    """A caution when the model scores a patient outside the ages it was validated on."""
    if population.name != CHILD or age_years is None:
        return None
    low, high = CHILD_MODEL_YEARS
    if age_years < low:
        return BABY_CAUTION
    if age_years >= high:
        return OLDER_CHILD_CAUTION
    return None
