"""The TOU calendar: which period is in force at an instant, and where it changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.energy.tou import TariffCalendar, parse_hours, parse_months

BERLIN = ZoneInfo("Europe/Berlin")
SHANGHAI = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class P:
    name: str
    price: float
    hours: tuple[str, ...]


@dataclass(frozen=True)
class S:
    months: str
    periods: tuple[P, ...]


@dataclass(frozen=True)
class T:
    periods: tuple[P, ...]
    currency: str = "CNY"
    seasons: tuple[S, ...] = ()
    weekend: tuple[P, ...] | None = None
    holiday: tuple[P, ...] | None = None
    holidays: tuple[date, ...] = field(default=())


SICHUAN = (  # 川发改价格规〔2023〕186号: peak 10-12, 15-21; flat 7-10, 12-15, 21-23; valley 23-7
    P("peak", 1.0, ("10:00-12:00", "15:00-21:00")),
    P("flat", 0.625, ("07:00-10:00", "12:00-15:00", "21:00-23:00")),
    P("valley", 0.25, ("23:00-07:00",)),
)


def at(tz: ZoneInfo, text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("23:00-07:00", (1380, 420)), ("00:00-24:00", (0, 1440)), ("7:30 - 8:00", (450, 480)),
     ("24:30-01:00", None), ("10-12", None), ("08:60-09:00", None)],
)  # fmt: skip
def test_hours_are_parsed_in_minutes(text: str, minutes: tuple[int, int] | None) -> None:
    assert parse_hours(text) == minutes


@pytest.mark.parametrize(
    ("text", "months"),
    [("12-2", [12, 1, 2]), ("6", [6]), ("7-8", [7, 8]), ("13", None), ("a-b", None)],
)
def test_month_ranges_wrap_the_year(text: str, months: list[int] | None) -> None:
    assert parse_months(text) == months


def test_a_weekday_changes_period_at_each_local_boundary() -> None:
    cal = TariffCalendar(T(SICHUAN), SHANGHAI)
    day = at(SHANGHAI, "2026-12-02T00:00")  # a Wednesday
    got = [(round((b - day) / 3600, 2), cal.names[p]) for b, p in cal.boundaries(day, day + 86400)]
    assert got == [
        (7.0, "flat"), (10.0, "peak"), (12.0, "flat"), (15.0, "peak"), (21.0, "flat"),
        (23.0, "valley"),
    ]  # fmt: skip
    assert cal.names[cal.period_at(day + 3 * 3600)] == "valley"
    assert cal.names[cal.period_at(day + 7 * 3600 - 1)] == "valley"
    assert cal.names[cal.period_at(day + 7 * 3600)] == "flat"


def test_seasons_weekends_and_holidays_choose_the_day_type() -> None:
    summer = (
        P("critical", 1.2, ("15:00-17:00",)),
        P("peak", 1.0, ("10:00-12:00", "17:00-21:00")),
        P("flat", 0.625, ("07:00-10:00", "12:00-15:00", "21:00-23:00")),
        P("valley", 0.25, ("23:00-07:00",)),
    )
    weekend = (P("flat", 0.625, ("07:00-23:00",)), P("valley", 0.25, ("23:00-07:00",)))
    holiday = (P("valley", 0.2, ("00:00-24:00",)),)
    cal = TariffCalendar(
        T(SICHUAN, seasons=(S("7-8", summer),), weekend=weekend, holiday=holiday,
          holidays=(date(2026, 10, 1),)),
        SHANGHAI,
    )  # fmt: skip
    assert cal.names[cal.period_at(at(SHANGHAI, "2026-07-15T16:00"))] == "critical"
    assert cal.names[cal.period_at(at(SHANGHAI, "2026-06-15T16:00"))] == "peak"
    assert cal.names[cal.period_at(at(SHANGHAI, "2026-07-18T16:00"))] == "flat"  # Saturday
    on_holiday = cal.period_at(at(SHANGHAI, "2026-10-01T16:00"))
    assert (cal.names[on_holiday], cal.prices[on_holiday]) == ("valley", 0.2)
    # The same name at two prices is two kernel periods: valley at 0.25 and the holiday's 0.2.
    assert sorted(zip(cal.names, cal.prices, strict=True)) == [
        ("critical", 1.2), ("flat", 0.625), ("peak", 1.0), ("valley", 0.2), ("valley", 0.25)
    ]  # fmt: skip


def test_a_holiday_without_its_own_periods_is_priced_as_a_weekend() -> None:
    weekend = (P("valley", 0.25, ("00:00-24:00",)),)
    cal = TariffCalendar(T(SICHUAN, weekend=weekend, holidays=(date(2026, 10, 1),)), SHANGHAI)
    assert cal.names[cal.period_at(at(SHANGHAI, "2026-10-01T11:00"))] == "valley"
    assert cal.names[cal.period_at(at(SHANGHAI, "2026-10-02T11:00"))] == "peak"


def test_the_spring_forward_day_skips_the_missing_hour() -> None:
    # Berlin 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00Z). A period 02:00-03:00 never runs.
    day = (P("deep", 0.1, ("02:00-03:00",)), P("flat", 0.5, ("03:00-02:00",)))
    cal = TariffCalendar(T(day), BERLIN)
    start, end = utc("2026-03-28T23:00"), utc("2026-03-29T22:00")
    names = [(datetime.fromtimestamp(b, UTC).strftime("%H:%M"), cal.names[p])
             for b, p in cal.boundaries(start, end)]  # fmt: skip
    assert names == []  # flat all day: the deep hour does not exist
    assert cal.names[cal.period_at(utc("2026-03-29T00:59:59"))] == "flat"
    assert cal.names[cal.period_at(utc("2026-03-29T01:00"))] == "flat"


def test_the_fall_back_day_prices_the_repeated_hour_twice() -> None:
    # Berlin 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00Z); 02:00-03:00 local happens twice.
    day = (P("deep", 0.1, ("02:00-03:00",)), P("flat", 0.5, ("03:00-02:00",)))
    cal = TariffCalendar(T(day), BERLIN)
    start, end = utc("2026-10-24T22:00"), utc("2026-10-25T23:00")
    got = [(datetime.fromtimestamp(b, UTC).strftime("%H:%M"), cal.names[p])
           for b, p in cal.boundaries(start, end)]  # fmt: skip
    # deep from 02:00 CEST (00:00Z) through the repeated hour to 03:00 CET (02:00Z): 2 h.
    assert got == [("00:00", "deep"), ("02:00", "flat")]
