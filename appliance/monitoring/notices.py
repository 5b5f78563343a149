"""What monitoring and calibration say, in plain English, each with a stable code.

The CLI, ``/healthz`` and the hub show ``message`` as it is; the pages show it in the
reader's language (``appliance/web/reasons.py`` lists every template below, word for
word). Numbers go in already written out, so the message reads the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TEMPLATES = {
    # calibration
    "no_results": "No results from %(model)s %(version)s on this box yet.",
    "too_few_cases": (
        "Not enough confirmed cases to recommend a threshold: %(positives)s positive and "
        "%(negatives)s negative; at least %(min_positives)s positive and %(min_negatives)s "
        "negative are needed, so that the threshold does not rest on one or two patients and "
        "its sensitivity is known to within about 12 points."
    ),
    "verification_bias": (
        "Confirmatory results exist for %(flagged)s of the images the box flagged but only "
        "%(unflagged)s of the others: sensitivity looks better and specificity worse than "
        "they are. Send a random sample of the patients the box did not flag for the same "
        "test (for example 1 in 10) and enter their results."
    ),
    "older_versions": (
        "%(count)s confirmed cases scored by another version of %(model)s are not used: a "
        "threshold belongs to the version that scored."
    ),
    "calibration_stale": (
        "The site threshold of %(model)s (%(threshold)s) was calibrated on version "
        "%(calibrated)s, and the box now runs %(version)s: calibrate again, or roll back "
        "to the bundle's own threshold."
    ),
    # drift: compared with the model's validation (the bundle's reference)
    "no_reference": (
        "No reference distribution in this bundle version (%(model)s %(version)s): its "
        "scores are compared with this site's own earlier images only."
    ),
    "scores_vs_validation": (
        "%(model)s: the scores of the last %(n)s images no longer look like the model's "
        "validation (population stability index %(psi)s, alarm above %(bound)s). Check "
        "that the images are of the kind and the patients the model was made for."
    ),
    "positivity_vs_validation": (
        "%(model)s: %(now)s of the last %(n)s images scored at or above the model's own "
        "threshold, against %(before)s in validation."
    ),
    "refused_vs_validation": (
        "The box refused %(now)s of the last %(n)s images as not a chest X-ray or retina "
        "photo, against %(before)s in validation: check what is being sent."
    ),
    "router_unsure": (
        "The box is less sure what the images are: %(now)s of the last %(n)s were below "
        "the median confidence of validation. Check what is being sent."
    ),
    # drift: compared with this site's own baseline
    "scores_vs_site": (
        "%(model)s: the scores of the last %(n)s images no longer look like this site's "
        "earlier ones (population stability index %(psi)s, alarm above %(bound)s)."
    ),
    "positivity_vs_site": (
        "%(model)s: %(now)s of the last %(n)s images were flagged at today's threshold, "
        "against %(before)s of this site's earlier ones."
    ),
    "refused_vs_site": (
        "The box refused %(now)s of the last %(n)s images as not a chest X-ray or retina "
        "photo, against %(before)s of this site's earlier ones: check what is being sent."
    ),
    "ungradable_vs_site": (
        "%(now)s of the last %(n)s retina photos were not gradable, against %(before)s "
        "before: check the camera's lens, focus and flash, and the pupils' dilation."
    ),
    "images_changed": (
        "%(model)s: the images look different from this site's earlier ones (%(measure)s "
        "moved by %(effect)s standard deviations). Has the X-ray machine or camera, its "
        "settings, or the kind of patient changed?"
    ),
    "image_size_changed": (
        "%(model)s: images now arrive at about %(now)s pixels, against %(before)s before. "
        "Has the X-ray machine or camera, or its settings, changed?"
    ),
    # health
    "disk_low": (
        "The disk is nearly full: %(free)s MB free; below %(reserve)s MB new images are refused."
    ),
    "hot": "The box is hot: %(temperature)s °C. Give it air and keep it out of the sun.",
    "queue_old": ("An image has waited %(minutes)s minutes to be screened: check the System page."),
}
# What ``images_changed`` names as the measure that moved.
MEASURES = {
    "mean": "brightness",
    "contrast": "contrast",
    "layout": "where light and dark fall in the image",
    "rgb": "colour",
}


@dataclass(frozen=True)
class Notice:
    """One thing to tell staff: a stable ``code``, its English ``message`` and values."""

    code: str
    params: dict[str, Any] = field(default_factory=dict)
    model: str | None = None

    @property
    def message(self) -> str:
        return TEMPLATES[self.code] % self.params

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.model:
            out["model"] = self.model
        return out


def percent(share: float) -> str:
    """0.8412 -> "84%" (a share said to people)."""
    return f"{100 * share:.0f}%"
