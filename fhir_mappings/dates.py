"""Lenient FHIR date / dateTime / instant parsing to timezone-aware UTC datetimes."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_YEAR = re.compile(r"^\d{4}$")
_YEAR_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_fhir_datetime(value: object) -> datetime:
    """Parse a FHIR date/dateTime/instant. Partial dates start at their first instant (midnight UTC).

    A dateTime without an offset is read as UTC. Raises ValueError for anything else.
    """
    if not isinstance(value, str):
        raise ValueError(f"not a date string: {value!r}"[:120])
    s = value.strip()
    if len(s) > 10 and s[4:5] == "-" and s[10:11] == "T":  # fast path: a full dateTime / instant
        if s[-1] in "zZ":
            s = s[:-1] + "+00:00"
        dt = datetime.fromisoformat(s)
        return (dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt).astimezone(UTC)
    if _YEAR.match(s):
        return datetime(int(s), 1, 1, tzinfo=UTC)
    m = _YEAR_MONTH.match(s)
    if m:
        return datetime(int(m.group(1)), int(m.group(2)), 1, tzinfo=UTC)
    if _DATE.match(s):
        return datetime.fromisoformat(s).replace(tzinfo=UTC)
    if len(s) < 10 or not s[:4].isdigit():
        raise ValueError(f"bad date {value!r}"[:120])
    if s.endswith(("z", "Z")):
        s = s[:-1] + "+00:00"
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def try_parse(value: object) -> datetime | None:
    """parse_fhir_datetime, or None when the value is missing or unreadable."""
    if value is None:
        return None
    try:
        return parse_fhir_datetime(value)
    except (ValueError, OverflowError):
        return None
