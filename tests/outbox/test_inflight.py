"""The uplink's ack window, whatever order paho calls back in (pure: no broker)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.uplink.inflight import MID_SPAN, Done, InFlight, Kind


def test_qos0_written_inside_publish_is_done_and_holds_no_slot() -> None:
    # paho without its own thread: on_publish(mid) fires inside publish(), before the mid is known.
    window = InFlight()
    assert window.finished(7, True) is None
    assert window.handed(7, Kind.ROW_QOS0, 41, 0.0) == Done(Kind.ROW_QOS0, 41, True)
    assert len(window) == 0
    assert window.slots == 0
    assert window.unwritten == 0


def test_qos0_written_later_holds_no_ack_slot_but_counts_unwritten() -> None:
    window = InFlight()
    assert window.handed(1, Kind.ROW_QOS0, 10, 0.0) is None
    assert window.slots == 0
    assert window.unwritten == 1
    assert window.oldest_sent_at() is None  # nothing waits for a PUBACK
    assert window.finished(1, True) == Done(Kind.ROW_QOS0, 10, True)
    assert window.unwritten == 0


def test_qos1_holds_a_slot_until_its_puback_and_the_oldest_decides_the_timeout() -> None:
    window = InFlight()
    window.handed(1, Kind.ROW, 10, 5.0)
    window.handed(2, Kind.STATUS, 0, 6.0)
    window.handed(3, Kind.ROW, 11, 7.0)
    assert window.slots == 2
    assert len(window) == 3
    assert window.oldest_sent_at() == 5.0
    assert window.finished(1, True) == Done(Kind.ROW, 10, True)
    assert window.oldest_sent_at() == 7.0
    assert window.finished(3, False) == Done(Kind.ROW, 11, False)  # refused: the caller keeps it
    assert window.slots == 0
    assert window.oldest_sent_at() is None
    assert window.finished(2, True) == Done(Kind.STATUS, 0, True)


def test_nothing_is_handed_over_while_the_oldest_would_share_its_mid() -> None:
    window = InFlight()
    window.handed(1, Kind.ROW, 1, 0.0)  # stuck: its PUBACK never comes
    for n in range(2, MID_SPAN + 1):
        assert window.may_hand_over()
        window.handed(n, Kind.ROW_QOS0, n, 0.0)
        window.finished(n, True)
    assert not window.may_hand_over()
    window.finished(1, True)
    assert window.may_hand_over()


def test_clear_forgets_everything_paho_held() -> None:
    window = InFlight()
    window.handed(1, Kind.ROW, 1, 0.0)
    window.handed(2, Kind.ROW_QOS0, 2, 0.0)
    window.finished(3, True)
    window.clear()
    assert len(window) == 0
    assert window.slots == 0
    assert window.unwritten == 0
    assert window.handed(3, Kind.ROW, 3, 0.0) is None  # the early completion went with the session


# Each message: (qos, whether paho finishes it inside publish(), how late its completion is).
_messages = st.lists(
    st.tuples(st.sampled_from([0, 1]), st.booleans(), st.integers(0, 5)), max_size=60
)


@settings(max_examples=300, deadline=None)
@given(_messages)
def test_every_row_is_booked_exactly_once_in_any_callback_order(
    plan: list[tuple[int, bool, int]],
) -> None:
    window = InFlight()
    booked: list[int] = []
    due: list[tuple[int, int]] = []  # (step at which paho finishes it, mid)

    def book(done: Done | None) -> None:
        if done is not None:
            booked.append(done.row_id)

    for step, (qos, inline, delay) in enumerate(plan):
        mid = step + 1
        kind = Kind.ROW if qos else Kind.ROW_QOS0
        if qos == 0 and inline:
            book(window.finished(mid, True))  # inside publish()
            book(window.handed(mid, kind, mid, float(step)))
        else:
            book(window.handed(mid, kind, mid, float(step)))
            due.append((step + delay, mid))
        for _, m in sorted(d for d in due if d[0] <= step):
            book(window.finished(m, True))
        due = [d for d in due if d[0] > step]
        assert window.slots == sum(
            1 for _, m in due if plan[m - 1][0] == 1
        )  # only QoS 1 rows hold slots
    for _, m in sorted(due):
        book(window.finished(m, True))
    assert sorted(booked) == list(range(1, len(plan) + 1))
    assert len(window) == 0
    assert window.slots == 0
    assert window.unwritten == 0


def test_a_status_waiting_for_its_puback_is_not_a_row() -> None:
    # "Caught up" is judged on rows: a status document in flight (a slow link) must not make
    # the uplink think a backlog is still draining, or every status would call for another.
    window = InFlight()
    window.handed(1, Kind.STATUS, 0, 0.0)
    assert window.rows == 0
    assert len(window) == 1
    window.handed(2, Kind.ROW_QOS0, 5, 0.0)
    window.handed(3, Kind.ROW, 6, 0.0)
    assert window.rows == 2
