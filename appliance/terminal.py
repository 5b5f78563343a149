"""Text for a terminal. Names the box did not choose (file names from a USB stick or an
upload, patient names from DICOM, a site name from the hub, an error naming a file) can
hold control characters that move the cursor, clear the screen, or reverse the text
that follows (U+202E). The CLI prints them escaped, the way ``repr`` shows them; JSON
output needs nothing more (``json.dumps`` escapes them itself).
"""

from __future__ import annotations

import click


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object) -> str:
    """``text`` with every character that is not printable (control and format
    characters, line separators, odd spaces) written as an escape such as ``\\x1b``."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def echo(message: object = "", err: bool = False) -> None:
    """``click.echo`` of one line, escaped with ``printable``."""
    click.echo(printable(message), err=err)
