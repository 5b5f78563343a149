"""status.json: replaced whole, and garbage reads as unknown."""

from __future__ import annotations

import json

from appliance.inference.engines.status import read_status, status_path, write_status


def test_status_file_is_replaced_atomically_and_tolerates_garbage(config) -> None:
    assert read_status(config.data_dir)["state"] == "unknown"
    path = status_path(config.data_dir)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert read_status(config.data_dir)["state"] == "unknown"
    write_status(config.data_dir, {"state": "done", "bundles": {}})
    assert json.loads(path.read_text())["state"] == "done"
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]
