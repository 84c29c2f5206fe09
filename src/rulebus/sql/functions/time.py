"""``timestamp``, ``parse_time`` and ``time_to_epoch`` with Joda/Java date patterns."""

from __future__ import annotations

import re
import time as _time
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rulebus.sql.context import EvalContext
from rulebus.sql.functions import Function
from rulebus.sql.types import UNDEFINED, to_int_floor, to_string
from rulebus.sql.versions import V2016

_MONTHS = (
    *("January", "February", "March", "April", "May", "June"),
    *("July", "August", "September", "October", "November", "December"),
)
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_TOKEN = re.compile(r"'(?:[^']|'')*'|([A-Za-z])\1*|.", re.DOTALL)
_OFFSET = re.compile(r"(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?")


def timestamp(ctx: EvalContext) -> int:
    """The event's ingest time in epoch milliseconds, or now when the event has none."""
    return ctx.timestamp if ctx.timestamp is not None else _time.time_ns() // 1_000_000


def _tokens(pattern: str) -> list[tuple[str, str]]:
    """(kind, text): kind is a pattern letter, or "" for literal text."""
    out = []
    for match in _TOKEN.finditer(pattern):
        text = match.group(0)
        if text.startswith("'"):
            out.append(("", "'" if text == "''" else text[1:-1].replace("''", "'")))
        elif match.group(1):
            out.append((text[0], text))
        else:
            out.append(("", text))
    return out


def zone(name: str) -> tzinfo | None:
    """A time zone from an id ("America/Belize"), "UTC"/"Z", or an offset ("+01:00")."""
    if name in ("UTC", "Z", "GMT", "UT"):
        return UTC
    offset = _OFFSET.fullmatch(name)
    if offset is not None:
        sign, hours, minutes = offset.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
        if delta >= timedelta(hours=24):
            return None  # timezone() accepts only offsets strictly inside a day
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "America", a directory
        return None


def _offset_text(moment: datetime, colon: bool) -> str:
    offset = moment.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}{':' if colon else ''}{minutes:02d}"


def _field(moment: datetime, letter: str, count: int) -> str | None:
    number: int | None = None
    if letter == "G":
        return "AD" if moment.year > 0 else "BC"
    if letter in "yYu":
        year = moment.year
        return f"{year % 100:02d}" if count == 2 else str(year).zfill(count)
    if letter == "x":
        year = moment.isocalendar()[0]
        return f"{year % 100:02d}" if count == 2 else str(year).zfill(count)
    if letter == "M":
        if count >= 4:
            return _MONTHS[moment.month - 1]
        if count == 3:
            return _MONTHS[moment.month - 1][:3]
        number = moment.month
    elif letter == "E":
        day = _DAYS[moment.weekday()]
        return day if count >= 4 else day[:3]
    elif letter == "a":
        return "AM" if moment.hour < 12 else "PM"
    elif letter == "S":
        return f"{moment.microsecond // 1000:03d}"[:count].ljust(count, "0")
    elif letter == "z":
        return moment.tzname() or "" if count < 4 else str(moment.tzinfo)
    elif letter == "Z":
        return str(moment.tzinfo) if count >= 3 else _offset_text(moment, colon=count == 2)
    else:
        number = {
            "d": moment.day,
            "D": moment.timetuple().tm_yday,
            "e": moment.isoweekday(),
            "w": moment.isocalendar()[1],
            "H": moment.hour,
            "k": moment.hour or 24,
            "K": moment.hour % 12,
            "h": moment.hour % 12 or 12,
            "m": moment.minute,
            "s": moment.second,
            "C": moment.year // 100,
        }.get(letter)
    return None if number is None else str(number).zfill(count)


def parse_time(pattern: Any, millis: Any, zone_name: Any = "UTC") -> Any:
    """Format epoch milliseconds with a Joda-Time pattern in a time zone (default UTC)."""
    if type(pattern) is not str or type(zone_name) is not str:
        return UNDEFINED
    stamp = to_int_floor(millis)
    tz = zone(zone_name)
    if stamp is UNDEFINED or tz is None:
        return UNDEFINED
    try:
        moment = datetime.fromtimestamp(stamp / 1000, tz)
    except (OverflowError, OSError, ValueError):
        return UNDEFINED
    out = []
    for letter, text in _tokens(pattern):
        if not letter:
            out.append(text)
            continue
        field = _field(moment, letter, len(text))
        if field is None:
            return UNDEFINED
        out.append(field)
    return "".join(out)


def _parser(pattern: str) -> tuple[re.Pattern[str], list[tuple[str, int]]] | None:
    regex: list[str] = []
    fields: list[tuple[str, int]] = []
    for letter, text in _tokens(pattern):
        count = len(text)
        if not letter:
            regex.append(re.escape(text))
            continue
        if letter == "M" and count >= 3:
            regex.append("([A-Za-z]+)")
        elif letter == "E":
            regex.append("(?:[A-Za-z]+)")
            continue
        elif letter in "aG":
            regex.append("([A-Za-z]+)")
        elif letter in "zVO":
            regex.append(
                r"([A-Za-z_]+(?:/[A-Za-z_\-]+)*(?:[+-]\d{1,2}(?::?\d{2})?)?|[+-]\d{2}:?\d{2}|Z)"
            )
        elif letter in "ZXx":
            regex.append(r"(Z|[+-]\d{2}:?\d{2})")
        elif letter in "yu":
            regex.append(rf"(\d{{{1 if count < 2 else count},9}})")
        elif letter == "S":
            regex.append(rf"(\d{{{count}}})")
        elif letter in "dHhKkmsMD":
            regex.append(rf"(\d{{1,{max(count, 2)}}})")
        else:
            return None
        fields.append((letter, count))
    return re.compile("".join(regex), re.IGNORECASE), fields


def time_to_epoch(text: Any, pattern: Any) -> Any:
    """Parse ``text`` with a Java date pattern into epoch milliseconds (UTC by default)."""
    value, source = to_string(text), to_string(pattern)
    if value is UNDEFINED or source is UNDEFINED:
        return UNDEFINED
    parser = _parser(source)
    if parser is None:
        return UNDEFINED
    regex, fields = parser
    match = regex.fullmatch(value)
    if match is None:
        return UNDEFINED
    parts = {"year": 1970, "month": 1, "day": 1, "hour": 0, "minute": 0, "second": 0}
    micro, pm = 0, None
    tz: tzinfo = UTC
    for (letter, count), raw in zip(fields, match.groups(), strict=True):
        if letter in "yu":
            parts["year"] = int(raw) + (2000 if count == 2 else 0)
        elif letter == "M":
            if raw.isdigit():
                parts["month"] = int(raw)
            else:
                names = [m.lower()[: len(raw)] if count == 3 else m.lower() for m in _MONTHS]
                if raw.lower() not in names:
                    return UNDEFINED
                parts["month"] = names.index(raw.lower()) + 1
        elif letter == "d":
            parts["day"] = int(raw)
        elif letter in "Hk":
            parts["hour"] = int(raw) % 24
        elif letter in "hK":
            parts["hour"] = int(raw) % 12
        elif letter == "m":
            parts["minute"] = int(raw)
        elif letter == "s":
            parts["second"] = int(raw)
        elif letter == "S":
            micro = int(raw.ljust(6, "0")[:6])
        elif letter == "a":
            pm = raw.upper() == "PM"
        elif letter in "zVOZXx":
            found = zone(raw)
            if found is None:
                return UNDEFINED
            tz = found
    if pm:
        parts["hour"] += 12
    try:
        moment = datetime(**parts, microsecond=micro, tzinfo=tz)
    except ValueError:
        return UNDEFINED
    return int(moment.timestamp() * 1000) if micro == 0 else round(moment.timestamp() * 1000)


FUNCTIONS = [
    Function("timestamp", timestamp, 0, 0, context=True),
    Function("parse_time", parse_time, 2, 3, since=V2016),
    Function("time_to_epoch", time_to_epoch, 2, 2, since=V2016),
]
