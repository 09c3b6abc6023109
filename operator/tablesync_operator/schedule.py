"""Cron arithmetic for a TableSync schedule: intervals, budgets and missed schedules.

Pure functions over croniter, called by ``spec`` (validation, derived defaults) and by
``status`` (overrun and missed-schedule figures). Kubernetes CronJobs accept the standard
5-field syntax and the named ``@`` macros; this module accepts exactly those (no seconds
field, no ``@every``, no ``@reboot``, no ``CRON_TZ=`` prefix: ``spec.timeZone`` is the place
for a zone), and reads them as the CronJob controller's parser does (robfig/cron v3): no
day-of-week 7, no L, W or #, a ``*``-led day field ANDed with the other, no fire time in a
daylight-saving gap, and a schedule that never fires is refused.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_FIELD = r"[0-9A-Za-z*/,?\-]+"
_DAY_NAMES = r"SUN|MON|TUE|WED|THU|FRI|SAT"
FIVE_FIELDS = re.compile(rf"^{_FIELD}(\s+{_FIELD}){{4}}$")

# How many future fire times are sampled to measure the interval of irregular schedules
# (e.g. "0 9,17 * * 1-5"): enough to cover a week of an hourly pattern's gaps.
_SAMPLES = 64
# A missed-schedule check never walks more fire times than this in one call.
_MAX_WALK = 2000
_REFERENCE = datetime(2001, 1, 1, tzinfo=UTC)


class ScheduleError(ValueError):
    """The schedule or time zone cannot be used; the message says why."""


def normalize(schedule: str) -> str:
    """Return the 5-field expression for ``schedule`` (macros expanded).

    Raises ScheduleError if it is not a 5-field cron expression or a named macro, or if
    croniter rejects a field (e.g. minute 99). Empty list items are dropped (``1,,2`` is
    ``1,2``), as the CronJob's parser drops them.
    """
    text = schedule.strip()
    if text.startswith("@"):
        if text not in MACROS:
            raise ScheduleError(
                f"{text!r} is not a supported macro; use one of {', '.join(sorted(MACROS))}"
            )
        return MACROS[text]
    if not FIVE_FIELDS.match(text):
        raise ScheduleError(
            f"{text!r} is not a 5-field cron expression (minute hour day-of-month month "
            "day-of-week) or an @ macro such as @hourly"
        )
    # robfig/cron v3 splits a field's list with strings.FieldsFunc, which drops empty
    # items: the API server accepts "1,,2" and the controller reads it as "1,2"
    fields = [",".join(item for item in f.split(",") if item) for f in text.split()]
    if not all(fields):
        raise ScheduleError(f"{text!r} has a field of commas only, which matches no time: "
                            "it never fires")
    expr = " ".join(fields)
    if not croniter.is_valid(expr):
        raise ScheduleError(f"{text!r} has a field out of range")
    # What croniter accepts beyond the CronJob controller's parser (robfig/cron v3).
    day_of_month, day_of_week = fields[2], fields[4]
    unnamed = re.sub(_DAY_NAMES, "", day_of_week, flags=re.IGNORECASE)
    if re.search(r"[LW#]", day_of_month + unnamed, re.IGNORECASE):
        raise ScheduleError(f"{text!r} uses L, W or #, which Kubernetes CronJobs do not accept")
    values = [n for item in day_of_week.split(",") for n in re.findall(r"\d+", item.split("/")[0])]
    if any(int(n) > 6 for n in values):
        raise ScheduleError(f"{text!r} has a day-of-week above 6, which Kubernetes CronJobs "
                            "reject; use 0 for Sunday")
    for index, field in enumerate(fields):
        for item in field.split(","):
            bounds = item.split("/")[0]
            low, dash, high = bounds.partition("-")
            first, last = _field_value(low, index), _field_value(high, index)
            if dash and first is not None and last is not None and first > last:
                raise ScheduleError(
                    f"{text!r} has the range {bounds}, whose beginning is beyond its end: "
                    "Kubernetes CronJobs do not wrap around; use two ranges (22-23,0-6)"
                )
    try:
        croniter(expr, _REFERENCE, day_or=_day_or(expr)).get_next(datetime)
    except Exception:  # croniter's CroniterBadDateError: no such date within its search
        raise ScheduleError(f"{text!r} never fires (no date matches it)") from None
    return expr


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


def _field_value(text: str, index: int) -> int | None:
    """A range bound of field ``index`` (0 minute .. 4 day-of-week) as a number, names
    (JAN, MON) included, as robfig/cron v3 reads it; None if it is not one (``*``)."""
    if text.isdigit():
        return int(text)
    names = {3: _MONTHS, 4: _DAYS}.get(index, ())
    upper = text.upper()
    if upper in names:
        return names.index(upper) + (1 if index == 3 else 0)
    return None


def _day_or(expr: str) -> bool:
    """croniter's ``day_or`` for ``expr`` as the CronJob controller reads it (robfig/cron
    v3.0.1): a day that matches either day field fires when both are restricted; when either
    is unrestricted (:func:`_starred`), both must match."""
    fields = expr.split()
    return not (_starred(fields[2]) or _starred(fields[4]))


def _starred(field: str) -> bool:
    """Whether robfig/cron v3.0.1 marks a day field unrestricted (its star bit): an item
    that starts with ``*`` or ``?`` (``1,*`` too) without a step above 1. ``*/2``
    is restricted (parser.go ``getRange``: ``if step > 1 { extra = 0 }``), so
    ``0 0 */2 * 1`` fires on odd days *or* Mondays (spec.go ``dayMatches``)."""
    for item in field.split(","):
        low, _, step = item.partition("/")
        if low.split("-")[0] in ("*", "?") and (not step or (step.isdigit() and int(step) <= 1)):
            return True
    return False


def zone(time_zone: str | None) -> tzinfo:
    """The IANA zone named by ``spec.timeZone`` (UTC when unset); ScheduleError if unknown."""
    if not time_zone:
        return UTC
    try:
        return ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"{time_zone!r} is not an IANA time zone name") from None


def fire_times(
    schedule: str, time_zone: str | None, after: datetime, until: datetime
) -> list[datetime]:
    """Fire times t with ``after < t <= until``, ascending, as aware UTC datetimes.

    At most ``_MAX_WALK`` times are returned (the latest ones are dropped). A wall-clock time
    that does not exist in the zone (skipped by a daylight-saving jump) is no fire time: the
    CronJob controller's cron library (robfig/cron v3, ``SpecSchedule.Next``) only stops at
    times whose local hour and minute match the schedule, where croniter would substitute the
    first time after the jump (02:30 becomes 03:00). A wall-clock time that occurs twice (the
    clocks going back) fires twice in both.
    """
    expr = normalize(schedule)
    tz = zone(time_zone)
    start = after.astimezone(tz)
    walker = croniter(expr, start, day_or=_day_or(expr))
    minutes, hours = walker.expanded[0], walker.expanded[1]
    times: list[datetime] = []
    while len(times) < _MAX_WALK:
        nxt: datetime = walker.get_next(datetime)
        if nxt > until:
            break
        local = nxt.astimezone(tz)
        if ("*" in minutes or local.minute in minutes) and ("*" in hours or local.hour in hours):
            times.append(nxt.astimezone(UTC))
    return times


@functools.lru_cache(maxsize=1024)
def intervals_seconds(schedule: str, time_zone: str | None) -> tuple[float, float]:
    """(shortest, longest) gap between consecutive fire times, in seconds.

    Sampled from a fixed reference instant rather than "now", so that the defaults derived
    from it (budget, lag threshold, starting deadline) never change between two reconciles
    and the CronJob does not churn.
    """
    expr = normalize(schedule)
    walker = croniter(expr, _REFERENCE.astimezone(zone(time_zone)), day_or=_day_or(expr))
    previous: datetime = walker.get_next(datetime)
    gaps: list[float] = []
    for _ in range(_SAMPLES):
        nxt: datetime = walker.get_next(datetime)
        gaps.append((nxt - previous).total_seconds())
        previous = nxt
    return min(gaps), max(gaps)


def default_budget_seconds(schedule: str, time_zone: str | None) -> int:
    """Default overrun budget: half the shortest schedule interval (DESIGN.md section 3)."""
    shortest, _ = intervals_seconds(schedule, time_zone)
    return max(1, int(shortest // 2))


def default_lag_threshold_seconds(schedule: str, time_zone: str | None) -> int:
    """Default lag threshold: two of the longest schedule intervals.

    A healthy sync's lag saw-tooths between the cycle time and one interval plus the cycle
    time; twice the interval means at least one whole run was lost or is stuck.
    """
    _, longest = intervals_seconds(schedule, time_zone)
    return int(2 * longest)


def default_starting_deadline_seconds(budget_seconds: int) -> int:
    """Default CronJob ``startingDeadlineSeconds``: the overrun budget, clamped to 10..300.

    A run that cannot start within its budget would overrun anyway; the upper bound keeps a
    long-interval schedule from starting hours late after a control-plane outage.
    """
    return max(10, min(budget_seconds, 300))


def missed_schedules(
    schedule: str,
    time_zone: str | None,
    checked_until: datetime,
    now: datetime,
    grace_seconds: float,
    fired: Iterable[datetime],
) -> tuple[list[datetime], datetime]:
    """Fire times in ``(checked_until, now - grace]`` for which no Job was scheduled.

    ``fired`` holds the scheduled times of the Jobs the CronJob created (their
    ``batch.kubernetes.io/cronjob-scheduled-timestamp``) and its ``lastScheduleTime``. A fire
    time is judged only once ``grace_seconds`` (the CronJob's ``startingDeadlineSeconds`` plus
    slack) have passed: until then the controller may still start it late. Returns the missed
    times and the new ``checked_until``; comparison is to the minute, as CronJobs fire.
    """
    horizon = now - timedelta(seconds=grace_seconds)
    if horizon <= checked_until:
        return [], checked_until
    fired_minutes = {_minute(t) for t in fired}
    due = fire_times(schedule, time_zone, checked_until, horizon)
    missed = [t for t in due if _minute(t) not in fired_minutes]
    new_until = due[-1] if len(due) >= _MAX_WALK else horizon
    return missed, new_until


def _minute(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(second=0, microsecond=0)
