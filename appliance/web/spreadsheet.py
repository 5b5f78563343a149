"""CSV for people: cells a spreadsheet would run as a formula are written as text (the
rule is ``appliance.wire.csv_safe``'s, the same as the hub's exports)."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from flask import Response

from appliance.wire.csv_safe import UnwritableCell, safe_cell, safe_row

__all__ = ["csv_response", "safe_cell"]
log = logging.getLogger(__name__)


def csv_response(header: Sequence[str], rows: Iterable[Sequence[Any]], filename: str) -> Response:
    """A CSV download (UTF-8 with a byte-order mark, so a spreadsheet reads accents)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(safe_row(header))
    skipped = 0
    for row in rows:
        try:
            writer.writerow(safe_row(row))
        except UnwritableCell:
            skipped += 1  # one odd row never costs the nurse the whole register
    if skipped:
        log.warning("%s: %d row(s) left out, a value was not text or a number", filename, skipped)
    response = Response("\ufeff" + out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
