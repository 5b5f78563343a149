"""The hub's dashboard: login required, and the numbers a programme manager asks for."""

from __future__ import annotations

import re

import pytest
from sync.synckit import HubThread, box_public_key

from appliance.hub import records
from appliance.sync.client import HubClient


@pytest.fixture
def hub(tmp_path, database_url):
    server = HubThread(tmp_path / "hub", database_url)
    conn = server.conn()
    try:
        records.set_admin(conn, "manager", "correct horse battery")
    finally:
        conn.close()
    yield server
    server.close()


def result(n: int, triage: str | None, route: str = "chest_xray", version: str = "1.0") -> dict:
    data = {
        "image": {"sha256": f"{n:064x}"},
        "route": route,
        "triage": triage,
        "model": {"name": "cxr-pneumonia", "version": version},
        "created_at": "2024-05-02T10:00:00+00:00",
    }
    return {"id": f"result:{n}", "rev": 1, "kind": "result", "data": data}


def test_dashboard_needs_a_login_then_shows_sites_rates_and_models(hub):
    client = hub.app.test_client()
    assert client.get("/").status_code == 302
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    bad = client.post("/login", data={"username": "manager", "password": "x", "csrf_token": csrf})
    assert "Wrong user name or password." in bad.get_data(as_text=True)

    box = HubClient(
        hub.url, HubClient(hub.url).enrol(hub.enrol_code("Ndola"), "b", box_public_key())["token"]
    )
    box.ping()
    box.send_entries(
        [
            result(1, "urgent"),
            result(2, "routine"),
            result(3, None, "refused"),
            result(4, "review", version="1.1"),
            {
                "id": f"review:{1:064x}",
                "rev": 1,
                "kind": "review",
                "data": {
                    "image": {"sha256": f"{1:064x}"},
                    "verdict": "agree",
                    "created_at": "2024-05-02T11:00:00+00:00",
                },
            },
        ]
    )
    ok = client.post(
        "/login",
        data={"username": "manager", "password": "correct horse battery", "csrf_token": csrf},
    )
    assert ok.status_code == 302
    text = plain(client.get("/").get_data(as_text=True))
    # 4 results: 1 refused (25 %); of 3 chest films, 2 positive (66.7%); 1 of 2 reviewed;
    # no retina photo: no retina positivity (never one figure for both)
    assert '<td><a href="/sites/Ndola">Ndola</a></td><td>1</td>' in text
    assert "<td>4</td><td>66.7%</td><td>–</td><td>25.0%</td><td>1</td></tr>" in text
    assert "Last 12 weeks: Feb 12 – 18, 2024 to Apr 29 – May 5, 2024" in text
    assert "2024-W18" not in text.split('<form method="get"')[0]  # weeks are dates
    assert "<td>cxr-pneumonia</td><td>1.1</td><td>Pneumonia</td><td>1</td><td>1</td>" in text


def test_five_wrong_passwords_lock_the_login_and_idle_sessions_expire(hub):
    import time

    client = hub.app.test_client()
    csrf = re.search(
        r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)
    ).group(1)

    def attempt(password: str, username: str = "manager"):
        return client.post(
            "/login", data={"username": username, "password": password, "csrf_token": csrf}
        )

    for _ in range(5):
        assert attempt("guess").status_code == 401
    locked = attempt("correct horse battery")  # even the right one, from here, for now
    assert locked.status_code == 429 and "try again in 5 minutes" in locked.get_data(as_text=True)
    assert 295 <= int(locked.headers["Retry-After"]) <= 300
    assert attempt("correct horse battery", "MANAGER ").status_code == 429  # same account

    other = hub.app.test_client()  # another user name is not locked out with it
    csrf2 = re.search(
        r'name="csrf_token" value="([^"]+)"', other.get("/login").get_data(as_text=True)
    ).group(1)
    conn = hub.conn()
    try:
        records.set_admin(conn, "second", "another long password")
    finally:
        conn.close()
    ok = other.post(
        "/login",
        data={"username": "second", "password": "another long password", "csrf_token": csrf2},
    )
    assert ok.status_code == 302
    assert other.get("/").status_code == 200
    conn = hub.conn()
    try:  # 31 minutes without use, as the hub counts it
        with conn.transaction():
            conn.execute("UPDATE sessions SET seen_at = ?", (time.time() - 31 * 60,))
    finally:
        conn.close()
    assert other.get("/").status_code == 302  # idle too long: log in again


@pytest.mark.parametrize("lang", ["fr", "pt"])
def test_the_dashboard_speaks_the_boxes_languages(hub, lang):
    """The browser's language, or the one chosen on the page (kept across sign-in):
    no sentence of the hub's templates is left in English."""
    from web.test_i18n import english_phrases, extracted_msgids, visible

    client = hub.app.test_client()
    asked = client.get("/login", headers={"Accept-Language": f"{lang},en;q=0.5"})
    assert f'<html lang="{lang}">' in asked.get_data(as_text=True)

    client = hub.app.test_client()  # an English browser that chooses on the page
    csrf = re.search(
        r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)
    ).group(1)
    chosen = client.post("/language", data={"language": lang, "csrf_token": csrf})
    assert chosen.status_code == 302
    assert client.post("/language", data={"language": "fr"}).status_code == 400  # CSRF
    wrong = client.post("/login", data={"username": "x", "password": "y", "csrf_token": csrf})
    ok = client.post(
        "/login",
        data={"username": "manager", "password": "correct horse battery", "csrf_token": csrf},
    )
    assert ok.status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert f'<html lang="{lang}">' in page  # the choice outlived the new session
    phrases = english_phrases(extracted_msgids())
    for html in (wrong.get_data(as_text=True), page):
        text = visible(html)
        assert sorted(p for p in phrases if p in text) == []
    expected = {"fr": "Centre de dépistage", "pt": "Central de rastreio"}[lang]
    assert expected in visible(page)


# -- the programme pages (issue 29): chest and retina apart, charts, drill-down --------
def plain(html: str) -> str:
    """The page with babel's thin spaces in date ranges as plain ones, runs of space as one."""
    return re.sub(r"\s+", " ", html.replace("\u2009", " ").replace("\u202f", " "))


def _bars(page: str, series: str) -> dict[str, float]:
    """label -> value of one series' bars or points in the page's charts, in order."""
    found = re.findall(
        rf'class="(?:bar|point) {series}"[^>]*data-series="{series}" data-label="([^"]+)"'
        r' data-value="([^"]+)"',
        page,
    )
    return [(label, float(value)) for label, value in found]


def _expected(hub, weeks, **scope):
    from hub.dashkit import recount

    conn = hub.conn()
    try:
        counted = recount(conn, **scope)
    finally:
        conn.close()
    out = {}
    for programme in ("chest", "retina"):
        rows = [counted.get((programme, w), {"results": 0, "refused": 0, "positive": 0})
                for w in weeks]
        out[programme] = {
            "results": [r["results"] for r in rows],
            "positivity": [r["positive"] / (r["results"] - r["refused"])
                           for r in rows if r["results"] - r["refused"]],
            "refusal": [r["refused"] / r["results"] for r in rows if r["results"]],
        }
    return out


def _check_charts(page: str, expected: dict) -> None:
    """Each chart's numbers are the database's, recounted from the payloads."""
    results = page.split('class="chart bars"')[1].split("</svg>")[0]
    for programme in ("chest", "retina"):
        assert [v for _, v in _bars(results, programme)] == expected[programme]["results"]
        rates = page.split(f'data-programme-chart="{programme}"')[1].split("</svg>")[0]
        got = [v for _, v in _bars(rates, programme)]
        assert got == pytest.approx(expected[programme]["positivity"], abs=1e-6)
        got = [v for _, v in _bars(rates, "refusal")]
        assert got == pytest.approx(expected[programme]["refusal"], abs=1e-6)


@pytest.fixture
def programme_hub(tmp_path, database_url):
    from hub.dashkit import PASSWORD, seed
    from lifecycle.modelkit import new_version

    from appliance.lifecycle.pack import pack
    from appliance.wire.model_signature import new_key

    server = HubThread(tmp_path / "hub", database_url)
    public = new_key(tmp_path / "programme.key")
    file = tmp_path / "cxr-pneumonia-1.1.0.tar"
    pack(new_version(tmp_path / "built", "1.1.0", "cxr-pneumonia"), tmp_path / "programme.key",
         file)
    conn = server.conn()
    try:
        records.set_admin(conn, "manager", PASSWORD)
        server.boxes = seed(conn, (file, public, tmp_path / "hub"))
    finally:
        conn.close()
    yield server
    server.close()


def test_the_programme_page_keeps_chest_and_retina_apart_and_its_charts_recount(programme_hub):
    from hub.dashkit import sign_in

    from appliance.hub.readable import weeks_up_to

    hub = programme_hub
    client = hub.app.test_client()
    sign_in(client)
    page = plain(client.get("/").get_data(as_text=True))
    weeks = weeks_up_to("2026-W49", 12)
    _check_charts(page, _expected(hub, weeks))
    # a box silent for 10 days, named by its site, at the top of the page
    top = page.split("All sites")[0]
    assert "1 box has not reported for more than 3 days" in top and "Mansa · vm" in top
    assert "Nov 30 – Dec 6, 2026" in page and "2026-W49" not in page.split("<form")[2]
    assert page.count('class="card programme-card chest"') == 1
    assert page.count('class="card programme-card retina"') == 1
    # the band is the published bundle's validation positivity (its manifest)
    import json

    from helpers import bundle_dir

    reference = json.loads((bundle_dir("cxr-pneumonia") / "manifest.json").read_text())
    positivity = reference["reference"]["positivity"]
    assert f'data-low="{positivity:g}" data-high="{positivity:g}"' in page
    assert "<title>" in page and 'role="img"' in page
    assert "0.530 (calibrated" in page  # the box's threshold, in the reader's form
    assert "appliance hub publish" not in page
    for path in ("/sites/Ndola", "/sites/Mansa"):
        assert client.get(path).status_code == 200


def test_a_site_page_a_box_a_day_and_a_result(programme_hub):
    from hub.dashkit import sign_in

    from appliance.hub.readable import weeks_up_to

    hub = programme_hub
    client = hub.app.test_client()
    sign_in(client)
    page = client.get("/sites/Kitwe").get_data(as_text=True)
    weeks = weeks_up_to("2026-W49", 12)
    _check_charts(page, _expected(hub, weeks, site="Kitwe"))
    assert "Kitwe · vm" in page and "No monitoring summary received yet." in page
    # drift: the chest model's scores here against its validation histogram
    drift = page.split('data-model="cxr-pneumonia"')[1].split("</figure>")[0]
    assert 'class="reference"' in drift
    shares = [v for _, v in _bars(drift, "site")]
    assert len(shares) == 20 and sum(shares) == pytest.approx(1.0, abs=1e-4)
    assert "no validation reference" in page.split('data-model="fundus-referable-dr"')[1]
    [device] = hub.boxes["Kitwe"]
    box = client.get(f"/boxes/{device}").get_data(as_text=True)
    _check_charts(box, _expected(hub, weeks, device=device))
    assert f'href="/boxes/{device}/days/2026-11-30"' in box
    day = plain(client.get(f"/boxes/{device}/days/2026-11-30").get_data(as_text=True))
    opened = re.findall(rf'href="(/boxes/{device}/results/[^"]+)"', day)
    assert opened and "Nov 30, 2026" in day
    result = client.get(opened[0]).get_data(as_text=True)
    assert "patient (as the box sent it)" in result and "Kitwe" in result
    assert client.get(f"/boxes/{device}/days/yesterday").status_code == 404
    assert client.get("/sites/Nowhere").status_code == 404
    assert client.get(f"/boxes/{device}/results/result:nope").status_code == 404
    ndola = client.get("/sites/Ndola").get_data(as_text=True)
    assert "Scores drifted from the validation" in ndola


@pytest.mark.parametrize("lang", ["fr", "pt"])
def test_the_programme_speaks_the_readers_dates_and_numbers(programme_hub, lang):
    from hub.dashkit import sign_in

    client = programme_hub.app.test_client()
    sign_in(client)
    page = plain(client.get("/", headers={"Accept-Language": lang}).get_data(as_text=True))
    week = {"fr": "30 nov. – 6 déc. 2026", "pt": "30 de nov. – 6 de dez. de 2026"}[lang]
    assert week in page
    assert "0,530" in page and "0.530" not in page
    assert re.search(r"\d,\d ?%", page) and not re.search(r"\d\.\d ?%", page)
