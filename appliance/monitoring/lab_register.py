"""Reading a lab register's CSV: a file from outside, read strictly and within bounds.

- Text: UTF-8 (a spreadsheet's "CSV UTF-8", with or without its byte-order mark) unless
  the caller names another encoding that writes ``,;\\t\\r\\n`` and letters as ASCII
  does (latin-1, cp1252, ...). A byte that does not decode refuses the file, naming
  the row: never a silent U+FFFD in a patient ID.
- Size: a line at a time, so memory never holds more than one row of the file: at most
  ``MAX_ROW_BYTES`` per row (a longer one, or a quote never closed, names its row and
  column) and ``MAX_ROWS`` rows per file (split a bigger register; each file is still
  imported all rows or none).
- Cells: ``cell_problem`` says why a value the import uses cannot be taken (too long,
  a control character), for the caller to report with its row and column.

Rows are numbered as a spreadsheet shows them: the header is row 1.
"""

from __future__ import annotations

import codecs
import csv
import unicodedata
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from appliance.errors import ApplianceError

MAX_ROWS = 100_000
MAX_ROW_BYTES = 16 * 1024
MAX_CELL_CHARS = 256  # what the import reads: a UID is 64, a file name 255 at most
DEFAULT_ENCODING = "utf-8-sig"
T = TypeVar("T")
# What the csv module says -> what a person can do about it.
CSV_ERRORS = {
    "new-line character": 'its lines end oddly: save it from the spreadsheet as "CSV UTF-8"',
    "unexpected end of data": "a quote is opened and never closed",
    "expected after": "a quote in the middle of a quoted value",
}
_ASCII_LIKE = ",;\t\r\n\"'azAZ09:-/."


class RegisterError(ApplianceError):
    """A lab register's file that cannot be read as given (nothing is imported)."""


def encoding_codec(name: str) -> str:
    """The codec for ``name``, or RegisterError when it is unknown or not ASCII-like
    (UTF-16 splits lines on other bytes: save the register as CSV UTF-8 instead)."""
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise RegisterError(f"unknown encoding {name!r}: try utf-8, latin-1 or cp1252") from None
    if codec in ("utf-8", "utf-8-sig"):
        return "utf-8-sig"  # a byte-order mark, if there is one, is dropped
    try:
        ascii_like = _ASCII_LIKE.encode(codec) == _ASCII_LIKE.encode("ascii")
    except (UnicodeError, LookupError):
        ascii_like = False
    if not ascii_like or codec.startswith("utf-16"):
        raise RegisterError(f"the encoding {name} is not supported: save the file as CSV UTF-8")
    return codec


class _RowTooLong(Exception):
    """The row being read passed ``MAX_ROW_BYTES``."""


class _Lines:
    """The file's lines for the csv reader, decoded strictly, never more than one row's
    worth in memory; ``row_done`` starts the count of the next row."""

    def __init__(self, stream: BinaryIO, encoding: str) -> None:
        self.stream = stream
        self.encoding = encoding
        self.decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        self.row: list[str] = []
        self.size = 0
        self.ahead: str | None = None

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.ahead is not None:
            line, self.ahead = self.ahead, None
            return line
        line = ""
        while not line:  # a read that ends inside a character decodes to nothing yet
            raw = self.stream.readline(MAX_ROW_BYTES + 1 - self.size)
            if not raw:
                self.decoder.decode(b"", final=True)  # a character cut off at the end
                raise StopIteration
            self.size += len(raw)
            line = self.decoder.decode(raw)  # UnicodeDecodeError: the reader names the row
            self.row.append(line)
            if self.size > MAX_ROW_BYTES:
                raise _RowTooLong
        return line

    def peek(self) -> str:
        """The first line, read now and handed to the csv reader again."""
        self.ahead = next(self, "")
        return self.ahead

    def row_done(self) -> None:
        self.row.clear()
        self.size = 0


def _field_lengths(text: str, delimiter: str) -> list[int]:
    """How long each field of a row's text is, quotes followed (only to name the column
    of a row too long for the csv reader)."""
    lengths, quoted = [0], False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif char == delimiter and not quoted:
            lengths.append(0)
        else:
            lengths[-1] += 1
    return lengths


def _delimiter(first_line: str) -> str:
    """Comma, semicolon (a French or Portuguese spreadsheet's export) or tab. Only the
    delimiter is guessed: quoting is a spreadsheet's (a quote inside a quoted value is
    doubled), read strictly."""
    try:
        return csv.Sniffer().sniff(first_line, ",;\t").delimiter
    except csv.Error:
        return ","


class RegisterFile:
    """The register's header (``columns``, lower case) and its rows (``rows()``)."""

    def __init__(self, stream: BinaryIO, encoding: str = DEFAULT_ENCODING) -> None:
        self.encoding = encoding_codec(encoding)
        self.lines = _Lines(stream, self.encoding)
        self.number = 1  # the row being read
        self.columns: list[str] = []
        self.delimiter = _delimiter(self._read(self.lines.peek, done=False))
        self.reader = csv.reader(self.lines, csv.excel, delimiter=self.delimiter, strict=True)
        header = self._read(lambda: next(self.reader, []))
        self.columns = [(c or "").strip().lower() for c in header]

    def rows(self) -> Iterator[tuple[int, dict[str, str]]]:
        """(row number, {column: value stripped}) for every row that is not blank."""
        while True:
            self.number += 1
            values = self._read(lambda: next(self.reader, None))
            if values is None:
                return
            if not values:
                continue  # a blank line
            if self.number - 1 > MAX_ROWS:
                raise RegisterError(
                    f"the file has more than {MAX_ROWS:,} rows: split it into files of at"
                    f" most {MAX_ROWS:,} rows and import each one"
                )
            row = {c: "" for c in self.columns if c}
            row.update((c, v.strip()) for c, v in zip(self.columns, values, strict=False) if c)
            yield self.number, row

    def _read(self, step: Callable[[], T], done: bool = True) -> T:
        """One step of the reader, its failures said as the row and column they are in."""
        try:
            value = step()
        except UnicodeDecodeError as exc:
            byte = exc.object[exc.start : exc.start + 1].hex().upper()
            raise RegisterError(
                f"row {self.number}: the file is not {self._encoding_name()} text (byte 0x{byte})."
                ' Save it from the spreadsheet as "CSV UTF-8", or name its encoding'
                " (e.g. --encoding latin-1)"
            ) from None
        except _RowTooLong:
            raise RegisterError(
                f"row {self.number}, column {self._long_column()}: the row is longer than"
                f" {MAX_ROW_BYTES // 1024} KB (a very long value, or a quote that is never"
                " closed)"
            ) from None
        except csv.Error as exc:
            why = next((say for said, say in CSV_ERRORS.items() if said in str(exc)), str(exc))
            raise RegisterError(f"row {self.number}: not readable as CSV ({why})") from None
        if done:
            self.lines.row_done()
        return value

    def _encoding_name(self) -> str:
        return "UTF-8" if self.encoding == "utf-8-sig" else self.encoding

    def _long_column(self) -> str:
        lengths = _field_lengths("".join(self.lines.row), self.delimiter)
        index = max(range(len(lengths)), key=lambda i: (lengths[i], i))
        if index < len(self.columns) and self.columns[index]:
            return self.columns[index]
        return str(index + 1)


def cell_problem(value: str) -> str | None:
    """Why a value the import uses cannot be taken, or None."""
    if len(value) > MAX_CELL_CHARS:
        return f"longer than {MAX_CELL_CHARS} characters"
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cf", "Cs"):
            return f"contains a control character (U+{ord(char):04X}): type the value again"
    return None
