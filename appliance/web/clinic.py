"""Where and how the clinic keeps time: its name, time zone and date style, asked at
first start (``/setup``) and on Settings, from the same short lists.

The time-zone list is short on purpose (issue 24: ~450 entries, "Toronto" three times):
one city per zone a clinic is likely to use, grouped by region, each under the tz
database's current name for it (as ``zone.tab`` lists it: never an old alias such as
``Asia/Calcutta`` or ``US/Eastern``), labelled "City (Country)" in the reader's language.
A city whose country has one zone is listed even where the tz database now links it to
another country's zone (Dakar to Abidjan): a nurse looks for her own city. A zone this
system does not know is left out, and the value in use stays on offer even when it is
not in the list (``unlisted_zone``).
"""

from __future__ import annotations

import unicodedata
from datetime import date
from functools import lru_cache

from babel.core import Locale, get_global
from babel.dates import get_timezone_location
from flask_babel import lazy_gettext as _l

UTC = "UTC"
ZONES: dict[str, tuple[str, ...]] = {
    "Africa": (
        "Africa/Abidjan", "Africa/Accra", "Africa/Addis_Ababa", "Africa/Algiers",
        "Africa/Asmara", "Africa/Bamako", "Africa/Bangui", "Africa/Banjul", "Africa/Bissau",
        "Africa/Blantyre", "Africa/Brazzaville", "Africa/Bujumbura", "Africa/Cairo",
        "Africa/Casablanca", "Africa/Conakry", "Africa/Dakar", "Africa/Dar_es_Salaam",
        "Africa/Djibouti", "Africa/Douala", "Africa/Freetown", "Africa/Gaborone",
        "Africa/Harare", "Africa/Johannesburg", "Africa/Juba", "Africa/Kampala",
        "Africa/Khartoum", "Africa/Kigali", "Africa/Kinshasa", "Africa/Lagos",
        "Africa/Libreville", "Africa/Lome", "Africa/Luanda", "Africa/Lubumbashi",
        "Africa/Lusaka", "Africa/Malabo", "Africa/Maputo", "Africa/Maseru", "Africa/Mbabane",
        "Africa/Mogadishu", "Africa/Monrovia", "Africa/Nairobi", "Africa/Ndjamena",
        "Africa/Niamey", "Africa/Nouakchott", "Africa/Ouagadougou", "Africa/Porto-Novo",
        "Africa/Sao_Tome", "Africa/Tripoli", "Africa/Tunis", "Africa/Windhoek",
        "Atlantic/Cape_Verde", "Indian/Antananarivo", "Indian/Comoro", "Indian/Mahe",
        "Indian/Mauritius", "Indian/Mayotte", "Indian/Reunion",
    ),
    "Americas": (
        "America/Argentina/Buenos_Aires", "America/Asuncion", "America/Bogota",
        "America/Caracas", "America/Cayenne", "America/Chicago", "America/Cuiaba",
        "America/Denver", "America/El_Salvador", "America/Fortaleza", "America/Guatemala",
        "America/Guayaquil", "America/Guyana", "America/Halifax", "America/Havana",
        "America/Jamaica", "America/La_Paz", "America/Lima", "America/Los_Angeles",
        "America/Managua", "America/Manaus", "America/Martinique", "America/Mexico_City",
        "America/Montevideo", "America/New_York", "America/Panama", "America/Paramaribo",
        "America/Port-au-Prince", "America/Puerto_Rico", "America/Recife",
        "America/Rio_Branco", "America/Santiago", "America/Santo_Domingo",
        "America/Sao_Paulo", "America/Tegucigalpa", "America/Toronto", "America/Vancouver",
        "America/Guadeloupe", "Pacific/Honolulu", "America/Anchorage",
    ),
    "Asia": (
        "Asia/Almaty", "Asia/Amman", "Asia/Baghdad", "Asia/Baku", "Asia/Bangkok",
        "Asia/Beirut", "Asia/Colombo", "Asia/Dhaka", "Asia/Dili", "Asia/Dubai",
        "Asia/Ho_Chi_Minh", "Asia/Hong_Kong", "Asia/Jakarta", "Asia/Jayapura",
        "Asia/Jerusalem", "Asia/Kabul", "Asia/Karachi", "Asia/Kathmandu", "Asia/Kolkata",
        "Asia/Kuala_Lumpur", "Asia/Macau", "Asia/Makassar", "Asia/Manila", "Asia/Phnom_Penh",
        "Asia/Riyadh", "Asia/Seoul", "Asia/Shanghai", "Asia/Singapore", "Asia/Taipei",
        "Asia/Tashkent", "Asia/Tbilisi", "Asia/Tehran", "Asia/Thimphu", "Asia/Tokyo",
        "Asia/Ulaanbaatar", "Asia/Vientiane", "Asia/Yangon", "Asia/Yerevan",
        "Indian/Maldives",
    ),
    "Europe": (
        "Atlantic/Azores", "Atlantic/Canary", "Atlantic/Madeira", "Europe/Amsterdam",
        "Europe/Athens", "Europe/Berlin", "Europe/Brussels", "Europe/Bucharest",
        "Europe/Budapest", "Europe/Copenhagen", "Europe/Dublin", "Europe/Helsinki",
        "Europe/Istanbul", "Europe/Kyiv", "Europe/Lisbon", "Europe/London", "Europe/Madrid",
        "Europe/Moscow", "Europe/Oslo", "Europe/Paris", "Europe/Prague", "Europe/Rome",
        "Europe/Stockholm", "Europe/Vienna", "Europe/Warsaw", "Europe/Zurich",
    ),
    "Oceania": (
        "Australia/Adelaide", "Australia/Brisbane", "Australia/Darwin", "Australia/Perth",
        "Australia/Sydney", "Pacific/Apia", "Pacific/Auckland", "Pacific/Efate",
        "Pacific/Fiji", "Pacific/Guadalcanal", "Pacific/Guam", "Pacific/Noumea",
        "Pacific/Port_Moresby", "Pacific/Tahiti", "Pacific/Tongatapu",
    ),
}  # fmt: skip
REGIONS = {
    "Africa": _l("Africa"),
    "Americas": _l("Americas"),
    "Asia": _l("Asia"),
    "Europe": _l("Europe"),
    "Oceania": _l("Oceania"),
}
# Date styles (the date_style setting): a pattern, and its name for the pickers. Times
# are always on the 24-hour clock: "2:21 AM" beside "12/6/2026" was read wrongly.
DATE_PATTERNS = {"dmy": "dd/MM/yyyy", "ymd": "yyyy-MM-dd", "mdy": "MM/dd/yyyy"}
DATE_STYLES = {
    "dmy": _l("day/month/year"),
    "ymd": _l("year-month-day"),
    "mdy": _l("month/day/year"),
}
EXAMPLE_DAY = date(2026, 11, 28)  # a day past the 12th: no style can be misread on it


def _sort_key(label: str) -> str:
    """Alphabetical as people read it: "Île" beside "Ilha", not after "Z"."""
    plain = unicodedata.normalize("NFKD", label)
    return "".join(c for c in plain if not unicodedata.combining(c)).casefold()


def zone_label(zone: str, locale: str) -> str:
    """ "Maputo (Mozambique)" in ``locale``'s words; the name itself for UTC or a zone
    babel cannot place."""
    if zone == UTC:
        return "UTC"
    where = Locale.parse(locale)
    try:
        city = get_timezone_location(zone, where, return_city=True)
    except LookupError:
        return zone
    country = where.territories.get(get_global("zone_territories").get(zone, ""), "")
    return f"{city} ({country})" if country and country != city else city


def _known_zones() -> frozenset[str]:
    """Names both zoneinfo (the worklist's "today") and pytz (Flask-Babel) know."""
    from zoneinfo import available_timezones

    import pytz

    return frozenset(available_timezones() & set(pytz.all_timezones))


@lru_cache(maxsize=8)
def _groups(locale: str) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    known = _known_zones()
    return tuple(
        (
            region,
            tuple(
                sorted(
                    ((zone, zone_label(zone, locale)) for zone in zones if zone in known),
                    key=lambda pair: _sort_key(pair[1]),
                )
            ),
        )
        for region, zones in ZONES.items()
    )


def zone_groups(locale: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """The picker's groups: [(region name, [(zone, label), ...]), ...]."""
    return [(str(REGIONS[region]), list(zones)) for region, zones in _groups(locale)]


def unlisted_zone(current: str, locale: str) -> tuple[str, str] | None:
    """(zone, label) of the zone in use when the short list lacks it: it stays on offer,
    so saving the page never changes it unasked."""
    listed = {zone for _region, zones in _groups(locale) for zone, _label in zones}
    return None if current in listed or current == UTC else (current, zone_label(current, locale))


def date_styles() -> list[tuple[str, str]]:
    """[(style, "28/11/2026 (day/month/year)"), ...] for the pickers: the example
    first, so a narrow select still shows it."""
    from flask_babel import format_date

    return [
        (style, f"{format_date(EXAMPLE_DAY, DATE_PATTERNS[style])} ({name})")
        for style, name in DATE_STYLES.items()
    ]
