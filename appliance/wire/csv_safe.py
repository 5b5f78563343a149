"""CSV for people, written the same way by the hub and the box: a cell a spreadsheet
would run as a formula is written as text.

OWASP's advice on CSV injection: a cell starting with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return is a formula (or becomes one) in Excel, LibreOffice and Google
Sheets — ``=HYPERLINK(...)`` in a site name, a model name or a patient's name would run
when a manager opens the file. Such a cell gets a leading apostrophe: the spreadsheet
shows the text as it was, and runs nothing.

Numbers: an ``int`` or a finite ``float`` the program holds as a number is written as a
number, a negative one too (``-0.5``): its text is digits, a sign and a point, nothing
a spreadsheet could run, and a column of numbers stays summable. Text that only looks
like a number (``"-0.5"`` received from a box as a string) is text from outside and is
escaped like any other text. Anything else (bytes, a list, ``True``) is not a cell we
know how to write: ``UnwritableCell`` says so, and the caller skips that record.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)?", re.IGNORECASE)


class UnwritableCell(TypeError):
    """A value that is neither text, a number nor empty: its record cannot be written."""


def safe_cell(value: Any) -> str | int | float:
    """``value`` as a spreadsheet shows it, never run (see the module's docstring)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        raise UnwritableCell(f"a {type(value).__name__} is not a cell")
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, float):
        value = str(value)  # inf, -inf, nan: text, so "-inf" is escaped below
    if not isinstance(value, str):
        raise UnwritableCell(f"a {type(value).__name__} is not a cell")
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def safe_row(values: Iterable[Any]) -> list[str | int | float]:
    """Every cell of a row through ``safe_cell`` (``UnwritableCell`` if one cannot be)."""
    return [safe_cell(value) for value in values]


def unsafe_cells(rows: Iterable[Iterable[str]]) -> list[str]:
    """The cells of parsed CSV rows that a spreadsheet would run (a number such as
    ``-0.5`` is read as a number): what a test of an export asserts is empty."""
    return [
        cell
        for row in rows
        for cell in row
        if cell.startswith(FORMULA_STARTS) and not NUMBER.fullmatch(cell)
    ]
