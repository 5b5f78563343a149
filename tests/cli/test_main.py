"""The ``appliance`` command as installed: every command documented, ``python -m`` works."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from appliance import __version__
from appliance.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_command_is_documented_in_the_readme():
    readme = README.read_text()
    documented = set(re.findall(r"appliance ([a-z]+)", readme))
    missing = set(main.commands) - documented
    assert not missing, f"README does not mention: {sorted(missing)}"


def test_python_dash_m_runs_the_same_command():
    done = subprocess.run(
        [sys.executable, "-m", "appliance", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == f"appliance, version {__version__}"
