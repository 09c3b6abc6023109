"""schedule: cron normalisation, intervals and missed-schedule detection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tablesync_operator import schedule as cron


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_macros_expand_to_five_fields() -> None:
    assert cron.normalize("@hourly") == "0 * * * *"
    assert cron.normalize("@midnight") == cron.normalize("@daily") == "0 0 * * *"


@pytest.mark.parametrize("bad", ["* * * * * *", "@every 1h", "@reboot", "61 * * * *", "x"])
def test_rejects_what_a_cronjob_would_not_run(bad: str) -> None:
    with pytest.raises(cron.ScheduleError):
        cron.normalize(bad)


@pytest.mark.parametrize(
    "reversed_range", ["0 22-6 * * *", "0 0 * * FRI-MON", "0 0 * NOV-FEB *", "50-10/5 * * * *"]
)
def test_a_range_that_wraps_around_is_refused_as_the_cronjob_refuses_it(
    reversed_range: str,
) -> None:
    """croniter reads 22-6 as 22..23,0..6; the CronJob's parser (robfig/cron v3) refuses it
    ("beginning of range (22) beyond end of range (6)"), so the apply of the CronJob failed on
    every retry (Reconciling, ApiError) instead of Stalled naming spec.schedule."""
    with pytest.raises(cron.ScheduleError, match="range"):
        cron.normalize(reversed_range)
    assert cron.normalize("0 6-22 * * MON-FRI") == "0 6-22 * * MON-FRI"


@pytest.mark.parametrize(
    ("listed", "read"),
    [("1,,2 * * * *", "1,2 * * * *"), (",1 * * * *", "1 * * * *"),
     ("0 1-3,,5 * JAN,,MAR 1,", "0 1-3,5 * JAN,MAR 1")],
)
def test_empty_list_items_are_dropped_as_the_cronjob_drops_them(listed: str, read: str) -> None:
    """robfig/cron v3 splits a list with strings.FieldsFunc, which drops empty items: the API
    server accepts 1,,2 (kubectl apply --dry-run=server, v1.36) and the controller fires at
    1 and 2; croniter refuses it, and the TableSync stalled as an invalid spec."""
    assert cron.normalize(listed) == read
    assert cron.intervals_seconds(listed, None) == cron.intervals_seconds(read, None)


def test_a_field_of_commas_only_never_fires_and_is_refused() -> None:
    """``, * * * *`` passes the API server's validation, but its minute field matches no
    minute: the CronJob never fires."""
    with pytest.raises(cron.ScheduleError, match="never fires"):
        cron.normalize(", * * * *")


def test_intervals_of_regular_and_irregular_schedules() -> None:
    assert cron.intervals_seconds("*/30 * * * *", None) == (1800, 1800)
    shortest, longest = cron.intervals_seconds("0 9,17 * * 1-5", None)
    assert shortest == 8 * 3600  # 09:00 -> 17:00
    assert longest == (16 + 48) * 3600  # Friday 17:00 -> Monday 09:00


def test_default_budget_is_half_the_shortest_interval() -> None:
    assert cron.default_budget_seconds("*/10 * * * *", None) == 300
    assert cron.default_budget_seconds("0 9,17 * * 1-5", None) == 4 * 3600


def test_fire_times_honour_the_time_zone() -> None:
    times = cron.fire_times(
        "0 2 * * *", "Europe/Berlin", at("2026-01-01T00:00:00"), at("2026-01-02T12:00:00")
    )
    assert times == [at("2026-01-01T01:00:00"), at("2026-01-02T01:00:00")]


def test_missed_schedules_are_fire_times_without_a_job() -> None:
    checked = at("2026-11-21T10:00:30")
    now = at("2026-11-21T10:10:30")
    fired = [at("2026-11-21T10:01:00"), at("2026-11-21T10:02:00"), at("2026-11-21T10:04:00")]
    missed, until = cron.missed_schedules("* * * * *", None, checked, now, 90.0, fired)
    # Judged: fire times up to now - 90 s = 10:09:00.
    assert missed == [at(f"2026-11-21T10:{m:02d}:00") for m in (3, 5, 6, 7, 8, 9)]
    assert until == now - timedelta(seconds=90)


def test_recent_fire_times_are_not_judged_before_the_grace() -> None:
    now = at("2026-11-21T10:30:10")
    missed, until = cron.missed_schedules(
        "*/30 * * * *", None, at("2026-11-21T10:00:00"), now, 60.0, []
    )
    assert missed == [] and until == at("2026-11-21T10:29:10")
    missed, _ = cron.missed_schedules(
        "*/30 * * * *", None, until, now + timedelta(seconds=60), 60.0, []
    )
    assert missed == [at("2026-11-21T10:30:00")]


def test_a_fired_time_counts_to_the_minute() -> None:
    fired = [at("2026-11-21T10:30:00") + timedelta(seconds=7)]
    missed, _ = cron.missed_schedules(
        "*/30 * * * *", None, at("2026-11-21T10:00:00"), at("2026-11-21T11:00:00"), 60.0, fired
    )
    assert missed == []


def test_a_time_skipped_by_daylight_saving_is_no_fire_time() -> None:
    """2026-03-08 02:30 does not exist in New York; the CronJob controller does not fire."""
    times = cron.fire_times(
        "30 2 * * *", "America/New_York", at("2026-03-06T12:00:00"), at("2026-03-10T00:00:00")
    )
    assert times == [at("2026-03-07T07:30:00"), at("2026-03-09T06:30:00")]


def test_a_time_repeated_by_daylight_saving_fires_twice() -> None:
    times = cron.fire_times(
        "30 1 * * *", "America/New_York", at("2026-11-01T00:00:00"), at("2026-11-01T12:00:00")
    )
    assert times == [at("2026-11-01T05:30:00"), at("2026-11-01T06:30:00")]


# Fire times robfig/cron v3.0.1 (the CronJob controller's parser, go run with
# cron.ParseStandard and Next) gives after 2026-11-01T00:00Z: a day field is unrestricted
# when an item starts with '*' or '?' without a step above 1; '*/2' is restricted.
ROBFIG_V3_NEXT = {
    "0 0 */2 * 1": ["11-02", "11-03", "11-05", "11-07", "11-09", "11-11"],  # odd days or Mon
    "0 0 1,*/2 * 1": ["11-02", "11-03", "11-05", "11-07", "11-09", "11-11"],
    "0 0 */1 * 1": ["11-02", "11-09", "11-16", "11-23", "11-30", "12-07"],  # Mondays
    "0 0 1,* * 1": ["11-02", "11-09", "11-16", "11-23", "11-30", "12-07"],
    "0 0 1 * 1": ["11-02", "11-09", "11-16", "11-23", "11-30", "12-01"],  # Mondays or the 1st
}


@pytest.mark.parametrize("schedule", ROBFIG_V3_NEXT)
def test_day_fields_combine_as_the_cronjob_controller_combines_them(schedule: str) -> None:
    """'0 0 */2 * 1' fires on odd days or Mondays for a CronJob; it was read as odd days
    and Mondays, so a schedule that fires every day or two got a week's cycle budget."""
    times = cron.fire_times(schedule, None, at("2026-11-01T00:00:00"), at("2026-12-31T00:00:00"))
    assert [t.strftime("%m-%d") for t in times[:6]] == ROBFIG_V3_NEXT[schedule]
