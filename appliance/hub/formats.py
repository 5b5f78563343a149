"""How the dashboard writes numbers and times in the reader's language (en/fr/pt):
"66.7%" / "66,7 %", "Nov 30, 2026 19:14" / "30 nov. 2026 19:14" (UTC, four-digit year)."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from functools import lru_cache

from babel import Locale
from babel.dates import format_skeleton
from babel.numbers import NumberPattern, parse_pattern
from flask_babel import get_locale

DASH = "–"


@lru_cache(maxsize=8)
def _percent_pattern(locale: Locale) -> NumberPattern:
    """The locale's percent pattern with one decimal, parsed once (a cascade page writes
    a hundred shares)."""
    pattern = locale.percent_formats[None].pattern  # "#,##0%", fr "#,##0\u202f%"
    return parse_pattern(re.sub(r"0(?=[^0-9#,.]*%)", "0.0", pattern, count=1))


def percent(value: float | None) -> str:
    """A share (0..1) as a percentage with one decimal, or a dash where there is none."""
    if value is None:
        return DASH
    locale = get_locale()
    return _percent_pattern(locale).apply(value, locale)


def _parsed(value: str | float | datetime | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, (int, float)):
        moment = datetime.fromtimestamp(value, timezone.utc)
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    if moment.tzinfo is not None:  # shown in UTC: boxes in several time zones report here
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def moment(value: str | float | datetime | None) -> str:
    """A stored time (ISO text or epoch seconds) as the reader writes it, in UTC; text
    that is not a time is shown as it is."""
    parsed = _parsed(value)
    if parsed is None:
        return "" if value in (None, "") else str(value)
    return f"{format_skeleton('yMMMd', parsed, locale=get_locale())} {parsed:%H:%M}"


def day(value: str | float | datetime | None) -> str:
    """A stored date or time as the reader writes the day alone."""
    parsed = _parsed(value)
    if parsed is None:
        return "" if value in (None, "") else str(value)
    return format_skeleton("yMMMd", parsed, locale=get_locale())
