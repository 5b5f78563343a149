"""A real Orthanc (the Debian package) for the PACS tests: its own storage, worklist
folder, free DICOM and HTTP ports on loopback; stopped and started again on the same
ports and storage (a PACS that goes down and comes back)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port

WORKLIST_PLUGIN = Path("/usr/share/orthanc/plugins/libModalityWorklists.so")


def require_orthanc() -> str:
    path = shutil.which("Orthanc")
    if path is None:
        pytest.skip("Orthanc is not installed (apt-get install orthanc; scripts/test does)")
    return path


class Orthanc:
    def __init__(self, folder: Path, aet: str = "ORTHANC") -> None:
        self.binary = require_orthanc()
        self.folder = folder
        self.aet = aet
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.worklists = folder / "worklists"
        self.worklists.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{self.http_port}"
        config = {
            "Name": "appliance-test",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"),
            "DicomAet": aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": True,
            "StableAge": 1,
            "DicomAlwaysAllowFindWorklist": True,  # any AE may ask the worklist
            "Plugins": [str(WORKLIST_PLUGIN)] if WORKLIST_PLUGIN.exists() else [],
            "Worklists": {"Enable": True, "Database": str(self.worklists)},
        }
        self.config_path = folder / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.log_path = folder / "orthanc.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def address(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def start(self, timeout: float = 30) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"Orthanc exited: {self.log_path.read_text()[-2000:]}")
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError("Orthanc did not answer on its REST port")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            body = response.read()
        return (
            json.loads(body) if response.headers.get_content_type() == "application/json" else body
        )

    def instances_in_study(self, study_uid: str) -> list[dict[str, Any]]:
        """Every instance Orthanc holds in the study, with its main tags."""
        request = urllib.request.Request(
            self.url + "/tools/find",
            data=json.dumps(
                {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                found = json.load(response)
        except urllib.error.URLError:
            return []
        for instance in found:
            tags = self.get(f"/instances/{instance['ID']}/simplified-tags")
            instance["Tags"] = tags
        return found

    def wait_for(self, study_uid: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = self.instances_in_study(study_uid)
            if len(found) >= count:
                return found
            time.sleep(0.2)
        raise AssertionError(f"Orthanc holds {len(found)} instances of {study_uid}, not {count}")
