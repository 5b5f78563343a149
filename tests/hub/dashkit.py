"""A small screening programme on a hub, and its figures recounted from the database
the slow, obvious way (every result's payload read in Python), for the programme pages'
tests: three sites, chest and retina results over five weeks, a box gone silent, a
monitoring summary with an alarm, and the chest model's bundle published (its
validation reference draws the band and the drift line)."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta, timezone

from appliance.hub import distribution, records
from appliance.hub.readable import week_key

PASSWORD = "correct horse battery"
SITES = ("Ndola", "Kitwe", "Mansa")
LAST_MONDAY = date(2026, 11, 30)  # week 2026-W49: "Nov 30 – Dec 6, 2026"


def _device(conn, site: str, name: str, seen: datetime) -> str:
    device_id = f"dev-{site.lower()}-{name}"
    conn.execute(
        "INSERT INTO devices (id, site, name, token_hash, public_key, enrolled_at, last_seen_at)"
        " VALUES (?, ?, ?, ?, 'k', '2026-01-01T00:00:00.000+00:00', ?)",
        (device_id, site, name, f"t-{device_id}", seen.isoformat(timespec="milliseconds")),
    )
    return device_id


def _result(n: int, day: date, route: str, triage: str | None, probability: float) -> dict:
    model = {"chest_xray": "cxr-pneumonia", "fundus": "fundus-referable-dr"}.get(route)
    data = {
        "image": {"sha256": f"{n:064x}", "patient_id": f"k{n % 17:04d}"},
        "route": route,
        "triage": triage,
        "created_at": f"{day.isoformat()}T09:{n % 60:02d}:00+00:00",
    }
    if model:
        version = "1.1.0" if model == "cxr-pneumonia" else "2.0.1"
        data.update(model={"name": model, "version": version}, probability=probability,
                    score=round(probability * 100), threshold=0.5)
    else:
        data["reason"] = "not a chest film or a retina photo"
    return {"id": f"result:{n}", "rev": 1, "kind": "result", "data": data}


def seed(conn, bundle=None) -> dict[str, list[str]]:
    """The programme; site -> its device ids. ``bundle``: a signed bundle file to publish
    (with the public key that signed it) for the reference."""
    now = datetime.now(timezone.utc)
    boxes: dict[str, list[str]] = {}
    n = 0
    with conn.transaction():
        for site in SITES:
            seen = now - timedelta(days=10) if site == "Mansa" else now - timedelta(hours=2)
            boxes[site] = [_device(conn, site, "vm", seen)]
    for s, site in enumerate(SITES):
        batch = []
        for week in range(5):
            monday = LAST_MONDAY - timedelta(weeks=4 - week)
            for i in range(6 + 3 * s + week):
                n += 1
                roll = (n * 37 + s) % 100
                route = "fundus" if i % 3 == 2 else "chest_xray"
                if roll > 88:
                    route = "refused"
                triage = None if route == "refused" else (
                    "urgent" if roll < 15 else "review" if roll < 40 else "routine")
                batch.append(_result(n, monday + timedelta(days=i % 5), route, triage, roll / 100))
        with conn.transaction():
            records.store_entries(conn, boxes[site][0], batch)
    summary = {
        "generated_at": now.isoformat(),
        "models": {"cxr-pneumonia": {"version": "1.1.0", "threshold": 0.53, "positivity": 0.31}},
        "calibration": {"cxr-pneumonia": {"version": "1.1.0", "threshold": 0.53,
                                          "source": "calibrated", "calibrated_at": now.isoformat(),
                                          "n_positive": 12, "n_negative": 30}},
        "warnings": [{"code": "drift", "message": "Scores drifted from the validation"}],
    }
    with conn.transaction():
        records.store_entries(conn, boxes["Ndola"][0], [
            {"id": "monitor:summary", "rev": 1, "kind": "monitor", "data": summary}])
    if bundle is not None:
        file, public, data_dir = bundle
        distribution.trust_key(conn, public)
        distribution.publish(conn, data_dir, file)
    return boxes


def programme_of(data: dict) -> str:
    model = (data.get("model") or {}).get("name") or ""
    if data.get("route") == "chest_xray" or model.startswith("cxr-"):
        return "chest"
    if data.get("route") == "fundus" or model.startswith("fundus-"):
        return "retina"
    return "other"


def recount(conn, site: str | None = None, device: str | None = None) -> dict:
    """(programme, week key) -> results, refused, positive, from every payload."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for row in conn.execute(
        "SELECT e.payload, e.device_id, d.site FROM entries e JOIN devices d"
        " ON d.id = e.device_id WHERE e.kind = 'result'"
    ):
        if (site and row["site"] != site) or (device and row["device_id"] != device):
            continue
        data = json.loads(row["payload"])
        day = date.fromisoformat(data["created_at"][:10])
        counts = out.setdefault((programme_of(data), week_key(day)),
                                {"results": 0, "refused": 0, "positive": 0})
        counts["results"] += 1
        counts["refused"] += data["route"] == "refused"
        counts["positive"] += data.get("triage") in ("urgent", "review")
    return out


def sign_in(client, password: str = PASSWORD) -> None:
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = client.post("/login", data={"username": "manager", "password": password,
                                         "csrf_token": csrf})
    assert answer.status_code == 302
