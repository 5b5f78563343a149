"""How the programme pages write weeks and numbers in the reader's language (en/fr/pt):
a week is its dates ("Nov 30 – Dec 6, 2026", "30 nov. – 6 déc. 2026"), never "2026-W49";
a threshold is "0.530" or "0,530" beside "27.3%" or "27,3 %" (formats.percent), never
a Python float. The week keys the hub stores (ISO "YYYY-Www") stay in links and data.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

from babel.dates import format_interval, format_skeleton
from babel.numbers import format_decimal
from flask_babel import get_locale

DASH = "–"
WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


def monday(week: str) -> date | None:
    """The Monday of an ISO week key ("2026-W49"), or None for anything else."""
    found = WEEK.match(week or "")
    if not found:
        return None
    try:
        return date.fromisocalendar(int(found[1]), int(found[2]), 1)
    except ValueError:
        return None


def week_key(day: date) -> str:
    year, number, _ = day.isocalendar()
    return f"{year}-W{number:02d}"


def weeks_up_to(last: str, count: int) -> list[str]:
    """``count`` consecutive week keys ending with ``last``, oldest first (a week
    without results still has its place on a chart's axis)."""
    end = monday(last)
    if end is None:
        return []
    return [week_key(end - timedelta(weeks=n)) for n in range(count - 1, -1, -1)]


def week_range(week: str) -> str:
    """The week's Monday to Sunday as the reader writes a date range."""
    start = monday(week)
    if start is None:
        return week or DASH
    return format_interval(start, start + timedelta(days=6), "yMMMd", locale=get_locale())


def week_short(week: str) -> str:
    """The week's Monday, day and month only: a chart's axis label."""
    start = monday(week)
    return format_skeleton("MMMd", start, locale=get_locale()) if start else (week or DASH)


def decimal(value: float | None, digits: int = 3) -> str:
    """A number such as a threshold with ``digits`` decimals, in the reader's form."""
    if value is None:
        return DASH
    return format_decimal(value, "0." + "0" * digits if digits else "0", locale=get_locale())


def count(value: int | None) -> str:
    """A whole number with the reader's grouping ("1,234", "1 234")."""
    return DASH if value is None else format_decimal(value, locale=get_locale())
