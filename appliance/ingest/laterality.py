"""Which eye a retina photo shows, from its file name (pure: a name in, "R", "L" or None).

Fundus cameras and clinics name files with the eye in them: ``P0042_OD.jpg``,
``IMG_0001-L.JPG``, ``right_eye_2.png``, ``oeil-gauche.jpg``. A name is cut into its
words (non-letters and lower-to-upper case changes split it); a word from one eye's list
gives that eye. A name with words of both eyes, or none, gives None: staff choose with
one tap on the study page. DICOM's ``ImageLaterality`` / ``Laterality`` are read
elsewhere (ingest/dicom.py) and come first.
"""

from __future__ import annotations

import re
from pathlib import PurePath

# Latin (OD/OS), English, French, Portuguese; single letters only as a word of their own.
RIGHT_WORDS = frozenset({"r", "od", "re", "right", "rt", "droit", "droite", "direito", "dto"})
LEFT_WORDS = frozenset({"l", "os", "le", "left", "lt", "gauche", "esquerdo", "esq"})
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")


def laterality_from_name(name: str | None) -> str | None:
    """"R", "L" or None for a file name (any folders before it are ignored)."""
    if not name:
        return None
    stem = PurePath(name.replace("\\", "/")).stem
    words = {w.lower() for w in _WORDS.findall(stem)}
    right, left = bool(words & RIGHT_WORDS), bool(words & LEFT_WORDS)
    if right == left:
        return None
    return "R" if right else "L"
