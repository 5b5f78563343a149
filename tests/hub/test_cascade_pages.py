"""The care cascade of hundreds of sites: fifty sites a page (as the programme page),
the all-sites funnel on top counting every site, and pager links that keep the period."""

from __future__ import annotations

import re

import pytest
from hub.dashkit import PASSWORD, sign_in
from hub.test_tallies import device, result, store

from appliance.hub import cascade, create_app, records

PERIOD = "from=2024-W18&to=2024-W18"  # result(n)'s day: 2024-05-01


@pytest.fixture
def app(tmp_path, database_url):
    app = create_app(tmp_path / "hub", database_url)
    conn = app.extensions["hub_database"].connect()
    try:
        records.set_admin(conn, "manager", PASSWORD)
        for n in range(58):  # each site one patient flagged (urgent), one routine
            box = device(conn, f"ZONE-{n:03d}")
            store(conn, box, [result(2 * n), result(2 * n + 1, triage="routine")])
    finally:
        conn.close()
    return app


def shown(html: str) -> dict[str, dict[str, str]]:
    """site ("" for all sites) -> the chest funnel's stages as shown."""
    out = {}
    for site, body in re.findall(
        r'<figure class="funnel" data-site="([^"]*)" data-programme="chest">(.*?)</figure>',
        html,
        re.S,
    ):
        out[site] = dict(re.findall(r'data-stage="(\w+)">([^<]*)<', body))
    return out


def test_the_cascade_shows_fifty_sites_a_page_and_the_total_of_all(app):
    client = app.test_client()
    sign_in(client)
    first = client.get(f"/cascade?{PERIOD}").get_data(as_text=True)
    funnels = shown(first)
    assert set(funnels) == {""} | {f"ZONE-{n:03d}" for n in range(50)}
    assert funnels[""]["screened"] == "116" and funnels[""]["flagged"] == "58"  # all 58
    assert funnels["ZONE-000"]["screened"] == "2" and funnels["ZONE-000"]["flagged"] == "1"
    assert "Sites 1–50 of 58" in first
    assert 'href="/cascade?page=2&amp;from=2024-W18&amp;to=2024-W18"' in first
    second = client.get(f"/cascade?page=2&{PERIOD}").get_data(as_text=True)
    funnels = shown(second)
    assert set(funnels) == {""} | {f"ZONE-{n:03d}" for n in range(50, 58)}
    assert funnels[""]["screened"] == "116"
    assert "Sites 51–58 of 58" in second and "page=1" in second
    assert client.get("/cascade?page=99").status_code == 200  # the last page
    assert client.get("/cascade?page=x").status_code == 200  # the first page


def test_only_the_pages_sites_are_counted_one_by_one(app):
    conn = app.extensions["hub_database"].connect()
    try:
        found = cascade.cascade(conn, "2024-W18", "2024-W18", page=2)
    finally:
        conn.close()
    assert [s["site"] for s in found["sites"]] == [f"ZONE-{n:03d}" for n in range(50, 58)]
    assert found["pager"] == {"page": 2, "pages": 2, "first": 51, "last": 58, "total": 58}
    [chest] = found["total"]
    assert (chest["screened"], chest["flagged"], chest["never_tested"]) == (116, 58, 58)
