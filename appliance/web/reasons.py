"""Show the English messages written deeper in the package in the reader's language.

Ingest and screening write their reasons in English into the database
(``results.reason``, ``results.hints``, ``quarantine.reason``), and the store raises
errors with English messages. What is stored never depends on who reads it, so the pages
translate at display time: every known text is listed below word for word as a msgid;
a text with numbers or names in it is a msgid with ``%(name)s`` placeholders, matched by
a pattern built from the msgid itself (so the English page shows exactly what was
stored). A text not listed (a newer version's reason, an operating-system error) is
shown as stored.

Keep each entry identical to its source; ``tests/web/test_i18n.py`` checks that the
sources' reasons are all recognised.
"""

from __future__ import annotations

import re

from flask_babel import gettext
from flask_babel import lazy_gettext as _l


def N_(message: str) -> str:
    """Mark ``message`` for extraction only; it is translated when shown."""
    return message


# DICOM BodyPartExamined terms (PS3.16 CID 4031, the ones X-ray devices write), in
# words; a term not listed is shown as the device sent it.
BODY_PARTS = {
    "CHEST": _l("chest"),
    "THORAX": _l("chest"),
    "LUNG": _l("lung"),
    "RIB": _l("ribs"),
    "CHEST_TO_PELVIS": _l("chest to pelvis"),
    "ABDOMEN": _l("abdomen"),
    "PELVIS": _l("pelvis"),
    "HIP": _l("hip"),
    "SKULL": _l("skull"),
    "HEAD": _l("head"),
    "NECK": _l("neck"),
    "SPINE": _l("spine"),
    "CSPINE": _l("cervical spine"),
    "TSPINE": _l("thoracic spine"),
    "LSPINE": _l("lumbar spine"),
    "SHOULDER": _l("shoulder"),
    "CLAVICLE": _l("collarbone"),
    "ARM": _l("arm"),
    "ELBOW": _l("elbow"),
    "FOREARM": _l("forearm"),
    "WRIST": _l("wrist"),
    "HAND": _l("hand"),
    "FINGER": _l("finger"),
    "EXTREMITY": _l("limb"),
    "UPR_EXTREMITY": _l("arm"),
    "LWR_EXTREMITY": _l("leg"),
    "LEG": _l("leg"),
    "KNEE": _l("knee"),
    "ANKLE": _l("ankle"),
    "FOOT": _l("foot"),
    "BREAST": _l("breast"),
    "EYE": _l("eye"),
    "JAW": _l("jaw"),
}


def body_part_name(code: str | None, capital: bool = False) -> str:
    """A BodyPartExamined term (``KNEE``; or as the gate writes it, ``knee``,
    ``chest to pelvis``) in the reader's language, as sent when not listed."""
    if not code:
        return ""
    word = BODY_PARTS.get(code.strip().upper().replace(" ", "_"))
    text = str(word) if word is not None else code
    return text[:1].upper() + text[1:] if capital and word is not None else text


KNOWN = (
    # appliance/ingest/sniff.py: NOT_AN_IMAGE (also dicom.read_dicom's empty file)
    N_("The file is empty (0 bytes). Copy or send it again."),
    N_("This is a PDF document, not an image."),
    N_("This is a compressed archive (ZIP), not an image. Unpack it and import the images."),
    N_("This is a text file, not an image."),
    N_("This file is not an image the box can read (expected DICOM, JPEG, PNG or TIFF)."),
    # appliance/ingest/dicom.py
    N_("The file is incomplete (cut off while copying or sending). Copy or send it again."),
    N_("The DICOM file is damaged and cannot be read. Send or copy it again."),
    N_("This DICOM file holds no image."),
    N_("This is a DICOM structured report (text), not an image."),
    N_("This DICOM file holds a document (such as a PDF), not an image."),
    N_("This DICOM file holds no image (%(kind)s)."),
    N_("The image description in this DICOM file is missing or invalid."),
    N_(
        "The image has %(frames)s frames, more than the %(limit)s the box accepts; "
        "it was not imported."
    ),
    N_("Unpacked, this DICOM file would be larger than the %(limit)s MB limit for one image."),
    # appliance/ingest/dicom.py, raster.py and headers.py
    N_("The image is only %(width)s × %(height)s pixels: too small."),
    N_(
        "The image is too large to process safely (%(width)s × %(height)s pixels); "
        "it was not imported."
    ),
    N_(
        "The image is %(width)s × %(height)s pixels, far larger than any X-ray or "
        "photograph; it was not imported."
    ),
    # appliance/ingest/raster.py and decode.py
    N_("The file is incomplete (cut off while copying). Copy it again."),
    N_("The JPEG file is damaged and cannot be read."),
    N_("The image file is damaged and cannot be decoded."),
    N_("The image is far larger than any X-ray or photograph."),
    N_("The image data is damaged and cannot be decoded."),
    # appliance/ingest/importer.py, sources.py, usb.py and hotfolder.py
    N_("The file is %(size)s MB, larger than the %(limit)s MB limit for one image."),
    N_("The file is larger than the %(limit)s MB limit for one image."),
    N_("This is not a regular file (a device, pipe or folder); it was not read."),
    N_("This is a link to a file outside the watched folder; it was not read."),
    N_("The file could not be read (%(error)s)."),
    N_("This is a link to a file elsewhere, not a file on the stick; it was not read."),
    N_("Cannot be read (%(error)s)."),
    # appliance/ingest/sandbox.py: an image whose decoding stopped the box once
    N_("Reading this image needs more memory than the box can spare; it was not screened."),
    # appliance/screening/gate.py: one whole sentence per kind of image it refuses
    # (its NOT_PROJECTION_XRAY), never a translated fragment put into a sentence.
    N_("This is a CT scan, not a chest X-ray or an eye photograph."),
    N_("This is an MRI scan, not a chest X-ray or an eye photograph."),
    N_("This is an ultrasound image, not a chest X-ray or an eye photograph."),
    N_("This is a nuclear medicine image, not a chest X-ray or an eye photograph."),
    N_("This is a PET scan, not a chest X-ray or an eye photograph."),
    N_("This is a mammogram, not a chest X-ray or an eye photograph."),
    N_("This is an angiogram, not a chest X-ray or an eye photograph."),
    N_("This is a fluoroscopy image, not a chest X-ray or an eye photograph."),
    N_("This is an ECG, not a chest X-ray or an eye photograph."),
    N_("This is a report, not a chest X-ray or an eye photograph."),
    N_("This is a document, not a chest X-ray or an eye photograph."),
    N_("This is a radiotherapy image, not a chest X-ray or an eye photograph."),
    N_("This is a radiotherapy plan, not a chest X-ray or an eye photograph."),
    N_("This is a segmentation, not a chest X-ray or an eye photograph."),
    N_("This is an OCT scan (not a fundus photograph), not a chest X-ray or an eye photograph."),
    # The body part is the DICOM tag's own term (hand, knee, skull...), shown as sent.
    N_("Not a chest X-ray: this X-ray is of the %(part)s."),
    N_("This is a side (lateral) view of the chest."),
    N_("Send the front view (PA or AP) of the same patient."),
    N_("Send a front-view (PA or AP) chest X-ray, or a photograph of the retina."),
    N_("The box cannot tell what this image shows."),
    N_("Check it is a chest X-ray or a retina photograph, well exposed, and send it again."),
    N_("Not a chest X-ray or a retina photograph: it cannot be screened."),
    N_("Labelled as a chest X-ray, but the image does not look like one."),
    N_("Labelled as an eye photograph, but the image does not look like a retina."),
    # gate.BLANK and gate.BLANK_HINT
    N_("The image is blank: there is nothing in it to screen."),
    N_(
        "Check the camera or the X-ray system (lens cap, exposure, cable) and send the "
        "image again."
    ),
    # appliance/screening/pipeline.py, with one of quality.py's MESSAGES
    N_("Photo not gradable: %(problem)s"),
    # appliance/screening/pipeline.py: OVERRULED_QUALITY
    N_(
        "Screened although the photo was judged not gradable (%(problem)s), on the "
        "instruction of %(user)s: read the result with care."
    ),
    # appliance/screening/heatmaps.py: HEATMAP_NOT_SHOWN (a hint)
    N_("Heatmap not shown: this model's maps have not passed their checks (decision support)."),
    # appliance/screening/quality.py: MESSAGES
    N_("Image blurred: clean the lens, focus and retake."),
    N_("Image too dark: dilate the pupil or increase the flash, and retake."),
    N_("Image over-exposed: reduce the flash and retake."),
    N_("Retina not fully in the picture: centre the eye and retake."),
    N_(
        "Part of the retina in shadow (eyelid, lashes or a small pupil): ask the patient to "
        "open wide, lift the lid or dilate, and retake."
    ),
    # appliance/store/users.py: UserError
    N_("A user name of 1 to 40 characters is needed."),
    N_("The PIN must be 4 to 12 digits."),
    N_("Unknown role or language."),
    N_("That user name is taken."),
    N_("Unknown role."),
    N_("Unknown language."),
    N_("The box needs at least one active admin."),
    # appliance/store/reviews.py: ReviewError
    N_("Choose agree or disagree."),
    N_("Unknown reason code: %(codes)s"),
    N_("Give at least one reason when you disagree."),
    N_("This image has no result to review yet."),
    N_("This image was not screened: there is no result to review."),
    # Written beside an adult's score before the box had an adult chest model; still
    # in the results stored then.
    N_(
        "Trained on X-rays of young children (1 to 5 years): for an adult, read this score "
        "with extra caution."
    ),
    # appliance/screening/population.py: OLDER_CHILD_CAUTION, BABY_CAUTION
    N_(
        "Trained on X-rays of young children (1 to 5 years): for an older child, read this "
        "score with extra caution."
    ),
    N_(
        "Trained on X-rays of young children (1 to 5 years): for a baby under 1 year, read "
        "this score with extra caution."
    ),
    # appliance/store/population.py: PopulationError
    N_("Choose adult or child."),
    N_("This X-ray is not waiting for a choice."),
    # appliance/store/routes.py: RouteError
    N_("Choose chest X-ray or retina photo."),
    N_(
        "Only an image the box could not recognise can be screened anyway; "
        "a refusal by the image's own DICOM tags stands."
    ),
    # appliance/store/patients.py: PatientError
    N_("Type the patient ID (up to 64 characters)."),
    N_("No such image."),
    N_("This image came with a patient ID from the device; it is kept."),
    # appliance/store/routes.py: screen_ungradable
    N_("Only a retina photo refused as not gradable can be screened so."),
    # appliance/store/eyes.py: EyeError
    N_("Choose the right or the left eye."),
    N_("The device gave this image's eye; it is kept."),
    # appliance/store/files.py: StorageFullError
    N_("disk nearly full: %(free)s MB free, %(reserve)s MB kept in reserve"),
    N_("disk full while writing %(name)s"),
    # appliance/config.py: ConfigError from the settings page
    N_("setting %(name)s from %(source)s: %(value)s is not a valid %(kind)s"),
    # appliance/monitoring/notices.py: TEMPLATES (drift, calibration and health notices)
    N_("No results from %(model)s %(version)s on this box yet."),
    N_(
        "Not enough confirmed cases to recommend a threshold: %(positives)s positive and "
        "%(negatives)s negative; at least %(min_positives)s positive and %(min_negatives)s "
        "negative are needed, so that the threshold does not rest on one or two patients and "
        "its sensitivity is known to within about 12 points."
    ),
    N_(
        "Confirmatory results exist for %(flagged)s of the images the box flagged but only "
        "%(unflagged)s of the others: sensitivity looks better and specificity worse than they "
        "are. Send a random sample of the patients the box did not flag for the same test (for "
        "example 1 in 10) and enter their results."
    ),
    N_(
        "%(count)s confirmed cases scored by another version of %(model)s are not used: a "
        "threshold belongs to the version that scored."
    ),
    N_(
        "The site threshold of %(model)s (%(threshold)s) was calibrated on version "
        "%(calibrated)s, and the box now runs %(version)s: calibrate again, or roll back to the "
        "bundle's own threshold."
    ),
    N_(
        "No reference distribution in this bundle version (%(model)s %(version)s): its scores "
        "are compared with this site's own earlier images only."
    ),
    N_(
        "%(model)s: the scores of the last %(n)s images no longer look like the model's "
        "validation (population stability index %(psi)s, alarm above %(bound)s). Check that the "
        "images are of the kind and the patients the model was made for."
    ),
    N_(
        "%(model)s: %(now)s of the last %(n)s images scored at or above the model's own "
        "threshold, against %(before)s in validation."
    ),
    N_(
        "The box refused %(now)s of the last %(n)s images as not a chest X-ray or retina photo, "
        "against %(before)s in validation: check what is being sent."
    ),
    N_(
        "The box is less sure what the images are: %(now)s of the last %(n)s were below the "
        "median confidence of validation. Check what is being sent."
    ),
    N_(
        "%(model)s: the scores of the last %(n)s images no longer look like this site's earlier "
        "ones (population stability index %(psi)s, alarm above %(bound)s)."
    ),
    N_(
        "%(model)s: %(now)s of the last %(n)s images were flagged at today's threshold, against "
        "%(before)s of this site's earlier ones."
    ),
    N_(
        "The box refused %(now)s of the last %(n)s images as not a chest X-ray or retina photo, "
        "against %(before)s of this site's earlier ones: check what is being sent."
    ),
    N_(
        "%(now)s of the last %(n)s retina photos were not gradable, against %(before)s before: "
        "check the camera's lens, focus and flash, and the pupils' dilation."
    ),
    N_(
        "%(model)s: the images look different from this site's earlier ones (%(measure)s moved "
        "by %(effect)s standard deviations). Has the X-ray machine or camera, its settings, or "
        "the kind of patient changed?"
    ),
    N_(
        "%(model)s: images now arrive at about %(now)s pixels, against %(before)s before. Has "
        "the X-ray machine or camera, or its settings, changed?"
    ),
    N_("The disk is nearly full: %(free)s MB free; below %(reserve)s MB new images are refused."),
    N_("The box is hot: %(temperature)s °C. Give it air and keep it out of the sun."),
    N_("An image has waited %(minutes)s minutes to be screened: check the System page."),
    # ... and MEASURES, the measure an images_changed notice names
    N_("brightness"),
    N_("contrast"),
    N_("where light and dark fall in the image"),
    N_("colour"),
    # appliance/monitoring/outcomes.py: OutcomeError
    N_("The treatment start date is in the future."),
    N_("Say where the treatment started (up to 100 characters), e.g. the clinic's name."),
    N_("Enter the confirmatory test's result first: a treatment start goes with it."),
    N_("The result must be positive, negative, a grade from 0 to 4, indeterminate or withdrawn."),
    N_("The date must be written YYYY-MM-DD or DD/MM/YYYY (day first)."),
    N_("Name the test (up to 60 characters), e.g. xpert or culture."),
    N_(
        "The file needs the columns test, result and date (or treatment_started), and one"
        " of sop_instance_uid, original_name or patient_id (with date) to find the image."
    ),
    N_("The test date is in the future."),
    N_("There is no such image."),
    # appliance/monitoring/calibration.py: CalibrationError and what it says
    N_(
        "Decision support, not a diagnosis: a threshold chooses which images a clinician sees "
        "first; it never rules disease in or out."
    ),
    N_("No model bundle named %(name)s is installed."),
    N_("%(name)s has no site threshold to calibrate (one of: %(known)s)."),
    N_("The target sensitivity must be at least 0.5 and below 1."),
    N_("%(variable)s is set in the environment and would override config.toml: remove it first."),
    N_("Nothing to apply: %(reasons)s"),
    N_("No calibration of %(model)s to roll back."),
    # appliance/monitoring/monitor.py: MonitorError and what it says
    N_("Decision support, not a diagnosis: monitoring says where to look."),
    N_("Unknown model %(scope)s: one of %(scopes)s."),
    N_(
        "Only %(count)s results of %(scope)s: at least %(needed)s are needed to accept them as "
        "this site's baseline."
    ),
    # appliance/inference/backends.py: what TensorRT needs where it cannot run. The System
    # page says it in plain words (system.py ``backend_in_words``); the install commands
    # (pip, JetPack) are for the technician, in `appliance doctor` and the log.
    N_("no NVIDIA GPU found (no /dev/nvidia* or Jetson GPU device)"),
    N_("no NVIDIA GPU found"),
    N_("no NVIDIA GPU found (CUDA: %(error)s)"),
    N_("no NVIDIA GPU driver found (pycuda: %(error)s)"),
    N_("pycuda does not load (%(error)s); reinstall pycuda"),
    N_("TensorRT does not load (%(error)s); reinstall it from JetPack"),
    N_(
        "TensorRT is installed but does not load (%(error)s); "
        "reinstall python3-libnvinfer from JetPack"
    ),
    N_("the GPU's compute capability cannot be read (%(error)s)"),
    # appliance/service.py and screening/models.py: what the System page lists
    N_("ok"),
    N_("not loaded"),
    N_("watching %(roots)s"),
    N_("%(aet)s on port %(port)s"),
)

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _pattern(msgid: str) -> re.Pattern[str]:
    parts = _PLACEHOLDER.split(msgid)  # literal, name, literal, name, ..., literal
    return re.compile(
        "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(parts)),
        re.DOTALL,
    )


EXACT = frozenset(m for m in KNOWN if not _PLACEHOLDER.search(m))
PATTERNS = tuple((_pattern(m), m) for m in KNOWN if _PLACEHOLDER.search(m))


def known_msgid(text: str) -> str | None:
    """The msgid ``text`` was made from, or None when it is not a known message."""
    if text in EXACT:
        return text
    for pattern, msgid in PATTERNS:
        if pattern.fullmatch(text):
            return msgid
    return None


def translate_reason(text: object) -> str:
    """``text`` in the current language when known; otherwise as it was stored."""
    if text is None:
        return ""
    text = str(text)
    if text in EXACT:
        return gettext(text)
    for pattern, msgid in PATTERNS:
        match = pattern.fullmatch(text)
        if match:
            # A value may itself be a known message ("Photo not gradable: <problem>"), or
            # a body part as the device named it.
            values = {
                name: body_part_name(value) if name == "part" else translate_reason(value)
                for name, value in match.groupdict().items()
            }
            return gettext(msgid, **values)
    return text
