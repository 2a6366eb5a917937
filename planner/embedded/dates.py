"""Dates written in words ("end of February", "next Friday", "Feb 28, 2027") turned into ISO dates."""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass

MONTHS: dict[str, int] = {}
for _number, _name in enumerate(calendar.month_name):
    if _name:
        MONTHS[_name.lower()] = _number
        MONTHS[_name[:3].lower()] = _number
MONTHS["sept"] = 9
WEEKDAYS = {name.lower(): index for index, name in enumerate(calendar.day_name)}
WEEKDAYS.update({name[:3].lower(): index for index, name in enumerate(calendar.day_name)})
_NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                 "eight": 8, "nine": 9, "ten": 10, "couple of": 2, "few": 3}

_MONTH = r"(?P<month>" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\.?"
_WEEKDAY = r"(?P<weekday>" + "|".join(sorted(WEEKDAYS, key=len, reverse=True)) + r")"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>\d{4})"

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        ("iso", r"\b(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})\b"),
        ("month_day", rf"\b{_MONTH}\s+(?:the\s+)?{_DAY}\b(?:,?\s*{_YEAR}\b)?"),
        ("day_month", rf"\b(?:the\s+)?{_DAY}\s+(?:of\s+)?{_MONTH}(?:,?\s*{_YEAR}\b)?"),
        ("numeric", r"\b(?P<month>\d{1,2})/(?P<day>\d{1,2})(?:/(?P<year>\d{2,4}))?\b"),
        ("end_of_month_name", rf"\b(?:the\s+)?end\s+of\s+{_MONTH}(?:\s+{_YEAR})?\b"),
        ("end_of_period", r"\b(?:the\s+)?(?:end\s+of\s+(?:the\s+)?(?P<which>this\s+|next\s+)?"
                          r"(?P<period>month|quarter|year|week)|(?P<period2>month|quarter|year|week)[- ]end)\b"),
        ("end_of_quarter_n", r"\b(?:the\s+)?end\s+of\s+q(?P<quarter>[1-4])(?:\s+(?P<year>\d{4}))?\b"),
        ("quarter_n", r"\bq(?P<quarter>[1-4])(?:\s+(?P<year>\d{4}))?\b"),
        ("relative_day", r"\b(?P<word>today|tonight|tomorrow|day after tomorrow)\b"),
        ("weekday", rf"\b(?P<which>next\s+|this\s+|coming\s+)?{_WEEKDAY}\b"),
        ("in_n", r"\bin\s+(?P<count>\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten|a couple of|a few)\s+"
                 r"(?P<unit>days?|weeks?|months?)\b"),
        ("next_period", r"\bnext\s+(?P<unit>week|month)\b"),
        ("month_only", rf"\b(?:in|by|to|until|till|before|for)\s+{_MONTH}(?:\s+{_YEAR})?\b"),
    )
)


@dataclass(frozen=True)
class DateMention:
    """A date found in text, with where it was written."""

    value: dt.date
    start: int
    end: int


def find_dates(text: str, today: dt.date) -> list[DateMention]:
    """Every date written in `text`, resolved against `today`; overlapping mentions keep the earliest, longest."""
    found: list[DateMention] = []
    for name, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            value = _resolve(name, match, today)
            if value is not None:
                found.append(DateMention(value, match.start(), match.end()))
    found.sort(key=lambda m: (m.start, -(m.end - m.start)))
    kept: list[DateMention] = []
    for mention in found:
        if kept and mention.start < kept[-1].end:
            continue
        kept.append(mention)
    return kept


def _resolve(name: str, match: re.Match[str], today: dt.date) -> dt.date | None:
    groups = match.groupdict()
    try:
        if name == "iso":
            return dt.date(int(groups["year"]), int(groups["month"]), int(groups["day"]))
        if name in ("month_day", "day_month", "numeric"):
            month = int(groups["month"]) if groups["month"].isdigit() else MONTHS[groups["month"].lower()]
            day = int(groups["day"])
            year = groups.get("year")
            if year:
                full = int(year) + (2000 if len(year) == 2 else 0)
                return dt.date(full, month, day)
            return _next_occurrence(today, month, day)
        if name == "end_of_month_name":
            month = MONTHS[groups["month"].lower()]
            year = int(groups["year"]) if groups.get("year") else _year_of_next(today, month)
            return _month_end(year, month)
        if name == "end_of_period":
            return _end_of_period(groups.get("period") or groups.get("period2") or "", groups.get("which"), today)
        if name in ("end_of_quarter_n", "quarter_n"):
            quarter = int(groups["quarter"])
            year = int(groups["year"]) if groups.get("year") else today.year
            end = _month_end(year, quarter * 3)
            return end if end >= today or groups.get("year") else _month_end(year + 1, quarter * 3)
        if name == "relative_day":
            word = groups["word"].lower()
            days = {"today": 0, "tonight": 0, "tomorrow": 1, "day after tomorrow": 2}[word]
            return today + dt.timedelta(days=days)
        if name == "weekday":
            return _weekday(today, WEEKDAYS[groups["weekday"].lower()], (groups.get("which") or "").strip().lower())
        if name == "in_n":
            count_text = groups["count"].lower().replace("a couple of", "couple of").replace("a few", "few")
            count = int(count_text) if count_text.isdigit() else _NUMBER_WORDS[count_text]
            unit = groups["unit"].lower().rstrip("s")
            if unit == "day":
                return today + dt.timedelta(days=count)
            if unit == "week":
                return today + dt.timedelta(weeks=count)
            return _add_months(today, count)
        if name == "next_period":
            if groups["unit"].lower() == "week":
                return today + dt.timedelta(days=7 - today.weekday())
            first = _add_months(today.replace(day=1), 1)
            return first
        if name == "month_only":
            month = MONTHS[groups["month"].lower()]
            year = int(groups["year"]) if groups.get("year") else _year_of_next(today, month)
            return _month_end(year, month)
    except (ValueError, KeyError):
        return None
    return None


def _next_occurrence(today: dt.date, month: int, day: int) -> dt.date:
    candidate = dt.date(today.year, month, day)
    return candidate if candidate >= today else dt.date(today.year + 1, month, day)


def _year_of_next(today: dt.date, month: int) -> int:
    return today.year if month >= today.month else today.year + 1


def _month_end(year: int, month: int) -> dt.date:
    return dt.date(year, month, calendar.monthrange(year, month)[1])


def _add_months(day: dt.date, months: int) -> dt.date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _end_of_period(period: str, which: str | None, today: dt.date) -> dt.date | None:
    following = (which or "").strip().lower() == "next"
    if period == "month":
        base = _add_months(today.replace(day=1), 1 if following else 0)
        return _month_end(base.year, base.month)
    if period == "quarter":
        quarter_end_month = ((today.month - 1) // 3 + 1) * 3 + (3 if following else 0)
        year = today.year + (quarter_end_month - 1) // 12
        return _month_end(year, (quarter_end_month - 1) % 12 + 1)
    if period == "year":
        return dt.date(today.year + (1 if following else 0), 12, 31)
    if period == "week":
        friday = today + dt.timedelta(days=(4 - today.weekday()) % 7)
        return friday + dt.timedelta(weeks=1) if following else friday
    return None


def _weekday(today: dt.date, weekday: int, which: str) -> dt.date:
    ahead = (weekday - today.weekday()) % 7 or 7
    candidate = today + dt.timedelta(days=ahead)
    if which == "next" and candidate.isocalendar()[1] == today.isocalendar()[1]:
        candidate += dt.timedelta(weeks=1)
    return candidate
