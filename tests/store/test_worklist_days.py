"""A clinic's day in UTC, for the worklist's search and the daily register (issue 24)."""

from __future__ import annotations

from datetime import date

from appliance.store import worklist


def test_a_day_runs_from_the_clinics_midnight_to_the_next_in_utc():
    assert worklist.day_bounds_utc(date(2024, 5, 1), "Africa/Maputo") == (
        "2024-04-30T22:00:00.000+00:00",
        "2024-05-01T22:00:00.000+00:00",
    )
    # The day clocks go forward in Lisbon has 23 hours.
    assert worklist.day_bounds_utc(date(2024, 3, 31), "Europe/Lisbon") == (
        "2024-03-31T00:00:00.000+00:00",
        "2024-03-31T23:00:00.000+00:00",
    )


def test_a_zone_the_box_does_not_know_counts_as_utc():
    assert worklist.day_bounds_utc(date(2024, 5, 1), "Mars/Olympus")[0] == (
        "2024-05-01T00:00:00.000+00:00"
    )
    assert worklist.local_midnight_utc("Mars/Olympus").endswith("T00:00:00.000+00:00")


def test_what_is_typed_in_the_search_box_is_trimmed_and_bounded():
    assert worklist.search_text("  Amina   Banda \n") == "Amina Banda"
    assert worklist.search_text(None) == ""
    assert worklist.search_text("x" * 1000) == "x" * worklist.SEARCH_MAX
