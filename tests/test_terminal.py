"""Names the box did not choose reach the terminal escaped: a real `appliance` process
given a file whose name clears the screen and reverses the text after it."""

from __future__ import annotations

import os
import subprocess
import sys

from appliance.terminal import printable

HOSTILE = "notes\x1b[2J\x1b]0;owned\x07\u202etxt.exe"


def test_printable_escapes_what_a_terminal_would_obey_and_keeps_the_rest():
    assert printable("Centro de Saúde 🏥 N'Djamena") == "Centro de Saúde 🏥 N'Djamena"
    assert printable("a\x1bb\x7fc\x85d\u202ee\u2028f\tg") == (
        "a\\x1bb\\x7fc\\x85d\\u202ee\\u2028f\\x09g"
    )
    assert printable(HOSTILE).isprintable()


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_cli_output_escapes_control_characters_in_names(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["APPLIANCE_USB_ROOTS"] = ""
    hostile = tmp_path / "stick" / HOSTILE
    hostile.parent.mkdir()
    hostile.write_text("follow-up list\n")
    data = str(tmp_path / "data")
    outputs = [
        run("ingest", str(hostile), "--data-dir", data, env=env),
        run("quarantine", "--data-dir", data, env=env),
    ]
    for done in outputs:
        assert done.returncode == 0, done.stderr
        assert "notes\\x1b[2J\\x1b]0;owned\\x07\\u202etxt.exe" in done.stdout
        assert not any(ch in done.stdout for ch in "\x1b\x07\u202e"), done.stdout
