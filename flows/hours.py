"""Business hours: when people answer the escalation queue (BUSINESS_HOURS, in the
company's time zone). A customer handed over outside them is told when a person will
answer; inside them, soon.

Written as `mon-fri 09:00-18:00; sat 10:00-13:00`: entries separated by `;`, each a day,
a range of days or a comma list of them (mon tue wed thu fri sat sun) and one opening
interval. Holidays are not modelled: on one, customers are told the usual hours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT = "mon-fri 09:00-18:00"
_ENTRY = re.compile(
    r"^\s*(?P<days>[a-z,\- ]+?)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$"
)


@dataclass(frozen=True, slots=True)
class Opening:
    weekday: int  # 0 = Monday
    start: time
    end: time


@dataclass(frozen=True, slots=True)
class BusinessHours:
    openings: tuple[Opening, ...]
    timezone: str = "UTC"

    @classmethod
    def parse(cls, text: str, timezone: str = "UTC") -> BusinessHours:
        """From BUSINESS_HOURS; ValueError says what is wrong with it."""
        openings: list[Opening] = []
        for raw in filter(str.strip, text.lower().split(";")):
            match = _ENTRY.match(raw)
            if match is None:
                raise ValueError(f"entry {raw.strip()!r}: want e.g. 'mon-fri 09:00-18:00'")
            start, end = _time(match["start"]), _time(match["end"])
            if end <= start:
                raise ValueError(f"entry {raw.strip()!r}: it closes before it opens")
            openings.extend(Opening(day, start, end) for day in _days(match["days"]))
        if not openings:
            raise ValueError("business hours: no opening at all")
        ZoneInfo(timezone)  # an unknown zone fails here, at start
        return cls(tuple(sorted(openings, key=lambda o: (o.weekday, o.start))), timezone)

    def is_open(self, at: datetime) -> bool:
        local = at.astimezone(ZoneInfo(self.timezone))
        return any(
            o.weekday == local.weekday() and o.start <= local.time() < o.end for o in self.openings
        )

    def next_opening(self, at: datetime) -> datetime:
        """When people are next at work, from `at` (itself, if they are now); local time."""
        local = at.astimezone(ZoneInfo(self.timezone))
        if self.is_open(at):
            return local
        for days_ahead in range(8):
            day = local.date() + timedelta(days=days_ahead)
            for o in self.openings:
                if o.weekday != day.weekday():
                    continue
                opens = datetime.combine(day, o.start, tzinfo=ZoneInfo(self.timezone))
                if opens > local:
                    return opens
        raise AssertionError("a week always holds an opening")  # parse() demands one

    def week(self) -> list[tuple[list[int], time, time]]:
        """The openings grouped: consecutive days with the same hours together, in order
        (for saying the schedule)."""
        groups: list[tuple[list[int], time, time]] = []
        for o in self.openings:
            last = groups[-1] if groups else None
            if last and last[1:] == (o.start, o.end) and last[0][-1] == o.weekday - 1:
                last[0].append(o.weekday)
            else:
                groups.append(([o.weekday], o.start, o.end))
        return groups


def _time(text: str) -> time:
    hours, minutes = (int(p) for p in text.split(":"))
    if hours == 24 and minutes == 0:
        return time.max
    return time(hours, minutes)


def _days(text: str) -> list[int]:
    days: list[int] = []
    for part in re.split(r"[,\s]+", text.strip()):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"business hours: unknown day in {part!r} (use {' '.join(DAYS)})")
        a, b = DAYS.index(first), DAYS.index(last or first)
        if b < a:
            raise ValueError(f"business hours: {part!r} runs backwards")
        days.extend(range(a, b + 1))
    return days
