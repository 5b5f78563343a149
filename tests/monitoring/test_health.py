"""The box's own health beside its models': a board that reports its temperature, an
image that waits too long, a disk filling up; and the router's and the fundus camera's
shares, which may only rise to alarm."""

from __future__ import annotations

import numpy as np
from helpers import TESTS

from appliance.monitoring import drift
from appliance.monitoring.health import health, temperatures


def thermal(root, zones: dict[str, int]):
    for index, (kind, millidegrees) in enumerate(zones.items()):
        zone = root / f"thermal_zone{index}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(f"{kind}\n")
        (zone / "temp").write_text(f"{millidegrees}\n")
    return root


def test_a_hot_board_and_an_image_waiting_too_long_are_said_in_plain_words(
    store, config, tmp_path, importer
):
    root = thermal(tmp_path / "thermal", {"CPU-therm": 88500, "GPU-therm": 61000})
    assert temperatures(root) == {"CPU-therm": 88.5, "GPU-therm": 61.0}
    png = TESTS / "data" / "cxr64" / "IM-0135-0001.png"
    image_id = importer.import_path(png, source="usb").image_id
    with store.write() as conn:  # queued since an hour ago (no worker running)
        conn.execute(
            "UPDATE jobs SET updated_at = datetime('now', '-60 minutes') || '+00:00'"
            " WHERE image_id = ?",
            (image_id,),
        )
    facts, notices = health(store, config, thermal_root=root)
    assert facts["temperature_c"] == 88.5 and facts["oldest_waiting_minutes"] >= 59
    messages = {n.code: n.message for n in notices}
    assert messages["hot"] == "The box is hot: 88 °C. Give it air and keep it out of the sun."
    assert messages["queue_old"].startswith("An image has waited 60 minutes to be screened")
    assert "disk_low" not in messages  # min_free_mb is 1 MB in the tests


def test_an_image_held_for_disk_space_counts_its_wait_from_when_it_was_queued(
    store, config, tmp_path, importer
):
    """A job waiting for disk space is put back at every backoff (its updated_at moves);
    the image has still waited since it arrived."""
    png = TESTS / "data" / "cxr64" / "IM-0135-0001.png"
    image_id = importer.import_path(png, source="usb").image_id
    with store.write() as conn:
        conn.execute(
            "UPDATE jobs SET created_at = datetime('now', '-45 minutes') || '+00:00',"
            " updated_at = datetime('now') || '+00:00', disk_waits = 7 WHERE image_id = ?",
            (image_id,),
        )
    facts, notices = health(store, config, thermal_root=tmp_path / "none")
    assert facts["oldest_waiting_minutes"] >= 44
    assert "queue_old" in {n.code for n in notices}


def test_a_board_without_sensors_says_nothing_about_temperature(store, config, tmp_path):
    facts, notices = health(store, config, thermal_root=tmp_path / "none")
    assert facts["temperature_c"] is None and notices == []


def router_window(refused: int, total: int, unsure: int = 0) -> drift.Window:
    scores = np.r_[np.full(unsure, 0.6), np.full(total - unsure, 0.99)]
    flags = np.zeros(total, bool)
    flags[:refused] = True
    return drift.Window(scores=scores, flags={"refused": flags, "ungradable": flags})


def test_refusals_alarm_when_they_rise_never_when_they_fall():
    reference = {"refused": 0.05, "top_probability_median": 0.95}
    _, rising = drift.router_vs_validation(router_window(40, 200), reference)
    assert [n.code for n in rising] == ["refused_vs_validation"]
    assert "refused 20% of the last 200 images" in rising[0].message
    _, fewer = drift.router_vs_validation(router_window(0, 200), reference)
    assert fewer == []  # a clinic that sends only what it should
    _, unsure = drift.router_vs_validation(router_window(0, 200, unsure=180), reference)
    assert [n.code for n in unsure] == ["router_unsure"]


def test_ungradable_photos_alarm_against_the_site_baseline():
    _, more = drift.share_vs_site(
        "ungradable_vs_site", "ungradable", router_window(4, 100), router_window(30, 60)
    )
    assert [n.code for n in more] == ["ungradable_vs_site"]
    assert more[0].message.startswith("50% of the last 60 retina photos were not gradable")
    _, same = drift.share_vs_site(
        "ungradable_vs_site", "ungradable", router_window(4, 100), router_window(3, 60)
    )
    assert same == []
