"""The Bus contract (event log, consumer, delivery store), held by every bus backend alike."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from rulebus.backends.base import Bus, Failure, Keyer, Retry
from rulebus.backends.registry import open_store
from rulebus.backends.sqlite_bus import Partition
from rulebus.errors import NoDeadLetter
from rulebus.events import Event
from rulebus.template.model import RetentionSpec

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]
# Opens a bus of the backend under test: (share index, number of shares, keyer).
OpenBus = Callable[..., Bus]


@pytest.fixture
def run() -> Iterator[Run[Any]]:
    with asyncio.Runner() as runner:
        yield runner.run


@pytest.fixture(params=["sqlite", "nats"])
def open_bus(request: pytest.FixtureRequest, tmp_path: Path, run: Run[Any]) -> Iterator[OpenBus]:
    """Opens buses on one log; each share is a fixed partition (SQLite) or a process (NATS)."""
    url = "sqlite"
    if request.param == "nats":
        server = request.getfixturevalue("nats_server")
        url = f"{server.url}?stream=T{secrets.token_hex(4)}&slots=8"
    opened: list[Bus] = []

    def open_one(index: int = 0, count: int = 1, keyer: Keyer | None = None) -> Bus:
        options: dict[str, Any] = {"engine": True, "keyer": keyer}
        if url == "sqlite" and count > 1:
            options["partition"] = Partition(index, count)
        bus: Bus = open_store("bus", url, tmp_path, **options)
        run(bus.open())
        opened.append(bus)
        return bus

    yield open_one
    for bus in reversed(opened):
        run(bus.close())


def events(n: int, prefix: str = "e", **payload: Any) -> list[Event]:
    return [
        Event(f"{prefix}{i}", "t/a", 1_700_000_000_000 + i, {"n": i, **payload}, "c", "p", hops=1)
        for i in range(n)
    ]


async def read_all(bus: Bus, expected: int, timeout: float = 20.0) -> list[Event]:
    out: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        got = await bus.read(100)
        out += got
        if not got:
            await bus.wait(0.05)
    return out


def test_appended_events_are_read_back_whole_and_in_order(open_bus: OpenBus, run: Run[Any]) -> None:
    """What is appended is read back at the position append gave it, with id, topic,
    time, client, principal, hops and payload as they were."""
    bus = open_bus()

    async def main() -> None:
        await bus.start([])
        sent = events(50, text="é ☃", nested={"a": [1, 2.5, None]})
        appended = await bus.append(sent)
        assert [a.duplicate for a in appended] == [False] * 50
        got = {e.id: e for e in await read_all(bus, 50)}
        assert [(e.id, e.topic, e.ts, e.client_id, e.principal, e.hops) for e in sent] == [
            (e.id, got[e.id].topic, got[e.id].ts, "c", "p", 1) for e in sent
        ]
        assert [got[e.id].payload for e in sent] == [e.payload for e in sent]
        assert {got[a.id].seq for a in appended} == {a.seq for a in appended}
        assert len({a.seq for a in appended}) == 50

    run(main())


def test_an_id_appended_again_is_a_duplicate_and_not_read_twice(
    open_bus: OpenBus, run: Run[Any]
) -> None:
    """Appending an id the log holds reports a duplicate and adds nothing."""
    bus = open_bus()

    async def main() -> None:
        await bus.start([])
        (first,) = await bus.append(events(1))
        (again,) = await bus.append(events(1))
        assert (first.duplicate, again.duplicate) == (False, True)
        assert again.seq == first.seq
        await bus.append(events(1, prefix="other"))
        assert sorted(e.id for e in await read_all(bus, 2)) == ["e0", "other0"]
        stats = await bus.stats()
        assert stats.head >= 2

    run(main())


def test_reading_resumes_after_what_was_committed(open_bus: OpenBus, run: Run[Any]) -> None:
    """After a restart, events that were read but not committed are read again; committed
    ones are not, and the stats say when all are dispatched."""
    bus = open_bus()
    left: list[str] = []

    async def first() -> None:
        await bus.start([])
        await bus.append(events(10))
        got = await read_all(bus, 10)
        await bus.commit(got[:6], [])
        left.extend(e.id for e in got[6:])
        stats = await bus.stats()
        assert stats.dispatched < stats.head

    run(first())
    run(bus.close())
    again = open_bus()

    async def second() -> None:
        await again.start([])
        got = await read_all(again, 4)
        assert sorted(e.id for e in got) == sorted(left)
        await again.commit(got, [])
        stats = await again.stats()
        assert stats.dispatched >= stats.head

    run(second())


def test_shares_split_the_log_and_keep_each_key_in_one_share_in_order(
    open_bus: OpenBus, run: Run[Any]
) -> None:
    """Two consumers read disjoint parts of the log that together are all of it, and all
    events of one partition key go to one of them, in the order they were appended."""

    def keyer(event: Event) -> str | None:
        return str(event.payload["sensor"])

    shares = [open_bus(0, 2, keyer), open_bus(1, 2, keyer)]

    async def main() -> None:
        for bus in shares:
            await bus.start([])
        await asyncio.sleep(2.5)  # distributed shares settle within a couple of lease rounds
        sent = [
            Event(f"k{i}", "t/a", 1, {"sensor": f"s{i % 7}", "i": i}, "c", "p") for i in range(300)
        ]
        for start in range(0, 300, 50):
            await shares[0].append(sent[start : start + 50])
        got: list[list[Event]] = [[], []]
        deadline = time.monotonic() + 20
        while sum(map(len, got)) < 300 and time.monotonic() < deadline:
            for i, bus in enumerate(shares):
                batch = await bus.read(100)
                got[i] += batch
                if batch:
                    await bus.commit(batch, [])
            await asyncio.sleep(0.01)
        ids = [[e.id for e in share] for share in got]
        assert sorted(ids[0] + ids[1]) == sorted(e.id for e in sent)
        assert not set(ids[0]) & set(ids[1])
        assert ids[0] and ids[1], "both shares got work"
        for share in got:
            by_sensor: dict[str, list[int]] = {}
            for e in share:
                by_sensor.setdefault(e.payload["sensor"], []).append(e.payload["i"])
            for sensor, order in by_sensor.items():
                assert order == sorted(order), f"{sensor} out of order"
        sensors = [{e.payload["sensor"] for e in share} for share in got]
        assert not sensors[0] & sensors[1], "a key's events went to both shares"

    run(main())


def test_failed_deliveries_wait_retry_and_dead_letter(open_bus: OpenBus, run: Run[Any]) -> None:
    """A retry kept at commit comes due with its event; it can be rescheduled, finished, or
    dead-lettered, and a redriven dead letter is due again at once, for the actions that
    had failed."""
    bus = open_bus()
    failure = Failure("table", "events", "disk on fire")

    async def main() -> None:
        await bus.start(["r"])
        await bus.append(events(3))
        got = sorted(await read_all(bus, 3), key=lambda e: e.seq)
        now = time.time()
        retries = [
            Retry(got[0], "r", 1, now - 1, [0], [failure]),
            Retry(got[1], "r", 1, now + 3600, [1], [failure]),
        ]
        await bus.commit(got, retries)
        due = await _settled(lambda: bus.due(time.time(), 10), 1)
        assert [(r.event.id, r.rule, r.attempts, r.actions) for r in due] == [("e0", "r", 1, [0])]
        assert due[0].event.payload == {"n": 0} and due[0].failures == [failure]
        assert (await bus.stats()).retrying == 2
        due[0].attempts = 2
        due[0].due_at = time.time() + 3600
        await bus.reschedule(due[0])
        assert await _settled(lambda: bus.due(time.time(), 10), 0) == []
        later = await _settled(lambda: bus.due(time.time() + 7200, 10), 2)
        assert sorted(r.attempts for r in later) == [1, 2]
        await bus.done(later[0])
        await bus.dead_letter(later[1])
        assert (await bus.stats()).retrying == 0
        (letter,) = await bus.dead_letters()
        assert letter.event.id == later[1].event.id and letter.rule == "r"
        assert letter.failures[0]["errorMessage"] == "disk on fire"
        assert (await bus.stats()).dead_letters == 1
        assert await bus.redrive(None) == 1
        assert await bus.dead_letters() == []
        (redriven,) = await _settled(lambda: bus.due(time.time(), 10), 1)
        assert (redriven.event.id, redriven.attempts) == (letter.event.id, 0)
        # Only the actions that had failed run again, as in a retry.
        assert redriven.actions == later[1].actions

    run(main())


def test_a_new_rule_applies_from_the_head_once_anything_was_dispatched(
    open_bus: OpenBus, run: Run[Any]
) -> None:
    """Rules present at the first start apply to the whole log; a rule added later applies
    only to events after the head at that time."""
    bus = open_bus()
    before: list[int] = []

    async def first() -> None:
        await bus.append(events(3))
        starts = await bus.start(["old"])
        assert starts == {"old": 0}
        got = await read_all(bus, 3)
        before.extend(e.seq for e in got)
        await bus.commit(got, [])

    run(first())
    run(bus.close())
    again = open_bus()

    async def second() -> None:
        starts = await again.start(["old", "new"])
        assert starts["old"] == 0
        assert max(before) <= starts["new"]
        await again.append(events(1, prefix="after"))
        (after,) = await read_all(again, 1)
        assert after.seq > starts["new"]

    run(second())


async def _settled(query: Callable[[], Coroutine[Any, Any, list[Retry]]], n: int) -> list[Retry]:
    """The query's answer once it has ``n`` items (a watched store catches up in a moment)."""
    deadline = time.monotonic() + 5
    while True:
        answer = await query()
        if len(answer) == n or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.05)


def test_every_process_must_split_a_nats_log_alike(
    nats_server: Any, tmp_path: Path, run: Run[Any]
) -> None:
    """A process given another slot count than the stream was made with refuses to start."""
    from rulebus.errors import RulebusError

    url = f"{nats_server.url}?stream=T{secrets.token_hex(4)}"
    first = open_store("bus", url + "&slots=8", tmp_path)
    run(first.open())
    try:
        other = open_store("bus", url + "&slots=16", tmp_path)
        with pytest.raises(RulebusError, match="split into 8 slots, not 16"):
            run(other.open())
    finally:
        run(first.close())


def test_fresh_events_appended_at_once_share_messages_and_keep_their_order(
    nats_server: Any, tmp_path: Path, run: Run[Any]
) -> None:
    """Concurrent appends of events with server-made ids go out as a few messages (one
    fsync each), yet each event gets its own position, and a consumer that committed
    part of a message resumes in its middle."""
    url = f"{nats_server.url}?stream=T{secrets.token_hex(4)}&slots=2"
    bus = open_store("bus", url, tmp_path, engine=True)

    async def main() -> None:
        await bus.open()
        await bus.start([])
        sent = [Event(f"f{i}", "t/a", 1, {"i": i}, fresh_id=True) for i in range(400)]
        results = await asyncio.gather(*(bus.append(sent[i : i + 4]) for i in range(0, 400, 4)))
        positions = [a.seq for r in results for a in r]
        assert len(set(positions)) == 400
        info = await bus._js.stream_info(bus._stream)  # type: ignore[attr-defined]
        assert info.state.messages < 100, "fresh events were not batched"
        got = await read_all(bus, 400)
        assert sorted(e.id for e in got) == sorted(e.id for e in sent)
        await bus.commit(got[:150], [])
        await bus.close()
        again = open_store("bus", url, tmp_path, engine=True)
        await again.open()
        await again.start([])
        rest = await read_all(again, 250)
        assert sorted(e.id for e in rest) == sorted(e.id for e in got[150:])
        await again.close()

    run(main())


def test_events_published_again_by_a_retried_rule_are_duplicates(
    open_bus: OpenBus, run: Run[Any]
) -> None:
    """Events with derived ids appended again, alone or among others, are reported as
    duplicates and read once."""
    bus = open_bus()

    async def main() -> None:
        await bus.start([])
        first = await bus.append(events(2, prefix="d"))
        again = await bus.append([*events(3, prefix="d")[1:], *events(1, prefix="x")])
        assert [a.duplicate for a in first] == [False, False]
        assert [(a.id, a.duplicate) for a in again] == [("d1", True), ("d2", False), ("x0", False)]
        got = await read_all(bus, 4)
        await asyncio.sleep(0.2)
        got += await bus.read(100)
        assert sorted(e.id for e in got) == ["d0", "d1", "d2", "x0"]

    run(main())


def test_compaction_removes_only_what_is_done_with(open_bus: OpenBus, run: Run[Any]) -> None:
    """Compaction removes old dispatched events; events not yet committed are read again
    after a restart, and a retry or a dead letter still has its event, which a redrive
    delivers again."""
    bus = open_bus()
    retention = RetentionSpec(max_age=0.2, duplicate_window=0.2)
    failure = Failure("table", "events", "disk on fire")
    uncommitted: list[str] = []

    async def first() -> None:
        await bus.start(["r"])
        await bus.append(events(30))
        got = await read_all(bus, 30)
        done, later = got[:20], got[20:]
        by_id = {e.id: e for e in done}
        now = time.time()
        await bus.commit(
            done,
            [
                Retry(by_id["e3"], "r", 1, now + 3600, [0], [failure]),
                Retry(by_id["e4"], "r", 1, now + 3600, [0], [failure]),
            ],
        )
        (doomed,) = [
            r for r in await _settled(lambda: bus.due(now + 7200, 10), 2) if r.event.id == "e4"
        ]
        await bus.dead_letter(doomed)
        uncommitted.extend(e.id for e in later)
        assert await bus.compact(retention) == 0, "nothing is old enough yet"
        await asyncio.sleep(0.3)
        # SQLite removes events and keeps those a retry or dead letter reads; JetStream
        # removes messages (here one per event), and retries carry their events.
        assert await bus.compact(retention) in (18, 20)
        assert await bus.compact(retention) == 0
        (retry,) = await bus.due(now + 7200, 10)
        assert (retry.event.id, retry.event.payload) == ("e3", {"n": 3})
        (letter,) = await bus.dead_letters()
        assert (letter.event.id, letter.event.payload) == ("e4", {"n": 4})
        (pending,) = await bus.append(events(30)[25:26])
        assert pending.duplicate, "an event not yet dispatched is still in the log"

    run(first())
    run(bus.close())
    again = open_bus()

    async def second() -> None:
        await again.start(["r"])
        got = await read_all(again, len(uncommitted))
        assert sorted(e.id for e in got) == sorted(uncommitted)
        assert all(e.payload["n"] == int(e.id[1:]) for e in got)
        assert await again.redrive(None) == 1
        redriven = await _settled(lambda: again.due(time.time() + 7200, 10), 2)
        assert sorted((r.event.id, r.event.payload["n"]) for r in redriven) == [
            ("e3", 3),
            ("e4", 4),
        ]

    run(second())


async def _dead_letter_all(bus: Bus, n: int, prefix: str = "e") -> dict[str, int]:
    """Appends ``n`` events whose deliveries of rule ``r`` all gave up: event id -> letter id."""
    await bus.append(events(n, prefix))
    got = await read_all(bus, n)
    failure = Failure("table", "events", "disk on fire")
    await bus.commit(got, [Retry(e, "r", 3, time.time() - 1, [0], [failure]) for e in got])
    ids = {}
    for retry in await _settled(lambda: bus.due(time.time(), 100), n):
        ids[retry.event.id] = await bus.dead_letter(retry)
    return ids


def test_dead_letter_ids_are_those_listed_and_unknown_ones_change_nothing(
    open_bus: OpenBus, run: Run[Any]
) -> None:
    """``dead_letter`` returns the id ``dead_letters`` lists; a redrive or purge naming
    an id that is no dead letter raises NoDeadLetter with all such ids and changes nothing."""
    bus = open_bus()

    async def main() -> None:
        await bus.start(["r"])
        ids = await _dead_letter_all(bus, 2)
        listed = {letter.event.id: letter.id for letter in await bus.dead_letters()}
        assert listed == ids
        known = ids["e0"]
        unknown = [max(ids.values()) + 1000, max(ids.values()) + 7]
        for act in (bus.redrive, bus.purge):
            with pytest.raises(NoDeadLetter) as caught:
                await act([known, *unknown])
            assert caught.value.ids == sorted(unknown)
            assert str(caught.value) == f"no dead letters with ids {sorted(unknown)[0]}, " + str(
                sorted(unknown)[1]
            )
        with pytest.raises(NoDeadLetter, match=r"^no dead letter with id 0$"):
            await bus.purge([0])
        assert sorted(letter.id for letter in await bus.dead_letters()) == sorted(ids.values())
        assert await bus.due(time.time() + 7200, 10) == []

    run(main())


def test_purged_dead_letters_are_gone_for_good(open_bus: OpenBus, run: Run[Any]) -> None:
    """Purging one dead letter removes it alone and it is not redriven after; the
    event's trace says when it was purged; purging all removes the rest."""
    bus = open_bus()

    async def main() -> None:
        await bus.start(["r"])
        ids = await _dead_letter_all(bus, 4)
        assert await bus.purge([ids["e1"]]) == 1
        assert sorted(letter.event.id for letter in await bus.dead_letters()) == [
            "e0",
            "e2",
            "e3",
        ]
        assert (await bus.stats()).dead_letters == 3
        with pytest.raises(NoDeadLetter):
            await bus.redrive([ids["e1"]])
        traced = (await bus.traced(["e1"]))["e1"]
        assert traced.dead_letters == []
        (purge,) = [run for _, run in traced.runs if run["kind"] == "purge"]
        assert purge["jobs"][0]["rule"] == "r" and purge["jobs"][0]["attempt"] == 3
        assert await bus.redrive([ids["e0"]]) == 1
        (redriven,) = await _settled(lambda: bus.due(time.time(), 10), 1)
        assert redriven.event.id == "e0"
        assert await bus.purge(None) == 2
        assert await bus.dead_letters() == []
        assert (await bus.stats()).dead_letters == 0
        assert await bus.purge(None) == 0
        assert [r.event.id for r in await bus.due(time.time(), 10)] == ["e0"]

    run(main())


def test_a_purged_dead_letter_no_longer_keeps_its_event(open_bus: OpenBus, run: Run[Any]) -> None:
    """Compaction keeps the event of a dead letter; once the letter is purged, the event
    goes with the next pass like any other done with."""
    bus = open_bus()
    retention = RetentionSpec(max_age=0.2, duplicate_window=0.2)

    async def main() -> None:
        await bus.start(["r"])
        ids = await _dead_letter_all(bus, 1, "held")
        await bus.append(events(5))
        await bus.commit(await read_all(bus, 5), [])
        await bus.compact(retention)  # notes the head: these events are old from now on
        await asyncio.sleep(0.3)
        await bus.compact(retention)
        (letter,) = await bus.dead_letters()
        assert letter.event.payload == {"n": 0}, "the dead letter still has its event"
        await bus.purge([ids["held0"]])
        await bus.compact(retention)
        assert await bus.traced(["held0", "e2"]) == {}, "both are gone from the log"

    run(main())


def test_compaction_keeps_events_within_the_duplicate_window(
    open_bus: OpenBus, run: Run[Any]
) -> None:
    """However small max_age and max_size are, events younger than the duplicate window
    stay, so an id appended again within it is still a duplicate."""
    bus = open_bus()
    retention = RetentionSpec(max_age=0.01, max_size=1, duplicate_window=60)

    async def main() -> None:
        await bus.start([])
        await bus.append(events(10))
        await bus.commit(await read_all(bus, 10), [])
        await asyncio.sleep(0.1)
        assert await bus.compact(retention) == 0
        assert await bus.compact(retention) == 0
        again = await bus.append(events(10))
        assert all(a.duplicate for a in again)

    run(main())


def test_events_appended_after_a_compaction_come_after_the_old_ones(
    open_bus: OpenBus, run: Run[Any]
) -> None:
    """Compaction never makes a position be given twice: events appended after all old
    ones went are read, at positions after theirs, and the stats still add up."""
    bus = open_bus()
    retention = RetentionSpec(max_age=0.1, duplicate_window=0.1)

    async def main() -> None:
        await bus.start([])
        await bus.append(events(5))
        old = await read_all(bus, 5)
        await bus.commit(old, [])
        await bus.compact(retention)
        await asyncio.sleep(0.2)
        assert await bus.compact(retention) >= 4
        await bus.append(events(3, prefix="new"))
        new = await read_all(bus, 3)
        assert sorted(e.id for e in new) == ["new0", "new1", "new2"]
        assert min(e.seq for e in new) > max(e.seq for e in old)
        await bus.commit(new, [])
        stats = await bus.stats()
        assert stats.dispatched >= stats.head

    run(main())


def test_a_log_compacted_by_size_stops_growing(tmp_path: Path, run: Run[Any]) -> None:
    """Under a steady stream, compaction by size keeps the SQLite file near max_size:
    SQLite reuses the pages that removed events free."""
    bus = open_store("bus", "sqlite", tmp_path, engine=True)
    retention = RetentionSpec(max_size=2_000_000, duplicate_window=0.001)
    path = tmp_path / "bus.sqlite3"
    sizes: list[int] = []  # what the file holds (part of it in the WAL until a checkpoint)

    async def main() -> None:
        await bus.open()
        await bus.start([])
        for n in range(40):
            sent = [Event(f"s{n}-{i}", "t/a", 1, {"pad": "x" * 400}) for i in range(1000)]
            await bus.append(sent)
            await bus.commit(await read_all(bus, 1000), [])
            await bus.compact(retention)
            with contextlib.closing(sqlite3.connect(path)) as db:
                (pages,) = db.execute("PRAGMA page_count").fetchone()
            sizes.append(pages * 4096)
        await bus.close()

    run(main())
    print(f"appended 40 x 1000 events; file after each round: {sizes}; at the end", path.stat())
    assert max(sizes[:4]) < 2_000_000 < max(sizes), "the log never outgrew max_size"
    assert max(sizes[10:]) < 3_000_000, "freed pages were not reused"
    assert path.stat().st_size == sizes[-1]
