"""A full disk under an embedded data directory.

Ingest refuses events with a 503 that says why (and when to try again);
nothing acknowledged is lost; the workers keep running, wait for room with one
warning each, and everything goes on by itself once there is room again.
The data directory is a tmpfs of 8 MB, so the test needs root to mount it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.helpers import EXCHANGE, Server, wait_until

PAD = "x" * 500  # about 8 MB of events fill the tmpfs within a few thousand


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs, unmounted afterwards (after the servers on it have stopped)."""
    where = tmp_path / "data"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        Server.stop_all()
        if subprocess.run(["umount", str(where)]).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)


def test_a_full_disk_refuses_events_loses_none_and_recovers_by_itself(small_disk: Path) -> None:
    server = Server(EXCHANGE, small_disk).start()
    workers = server.worker_pids()
    acknowledged: list[str] = []
    refusals: list[tuple[str, str | None]] = []
    batches = 0

    def post() -> bool:
        """Post a batch of 50 events; True if it was acknowledged."""
        nonlocal batches
        events = [
            {"id": f"e{batches}-{i}", "type": "buy" if i % 2 else "sell", "pad": PAD}
            for i in range(50)
        ]
        batches += 1
        answer = server.post("/events", events, key="")
        if answer.status_code == 503:
            refusals.append((answer.json()["error"], answer.headers.get("retry-after")))
            return False
        assert answer.status_code == 200 and answer.json()["accepted"] == 50, answer.text
        acknowledged.extend(event["id"] for event in events)
        return True

    # Fill the disk, then keep knocking for a while: the workers, still busy
    # with the backlog, meet the full disk too.
    wait_until(lambda: not post(), timeout=60, what="a refusal")
    for _ in range(40):
        post()
    assert refusals, "the disk never filled"
    assert set(refusals) == {(f"cannot store events: the disk under {small_disk} is full", "1")}
    full = len(acknowledged)

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    wait_until(post, timeout=10, what="an event accepted once there is room")
    for _ in range(20):
        assert post(), "refused although there is room"

    wait_until(server.idle, timeout=60, what="every event dispatched")
    stored = {row["id"] for row in server.scan("events")}
    lost = set(acknowledged) - stored
    engine_lines = [line for line in server.output if "rulebus.api" not in line]
    waits = [line for line in engine_lines if "is full; trying again until there is room" in line]
    print(
        f"acknowledged {len(acknowledged)} ({full} before the disk was full),"
        f" refused {len(refusals)} batches of 50, lost {len(lost)};"
        f" {len(waits)} warnings from {len(workers)} workers"
    )
    assert not lost
    assert server.dead_letters() == []
    assert server.proc is not None and server.proc.poll() is None
    assert server.worker_pids() == workers, "a worker restarted"
    assert not [line for line in engine_lines if " ERROR " in line or "Traceback" in line]
    assert len(waits) <= 2 * len(workers), waits  # one warning, not one per attempt
    api_lines = [line for line in server.output if "rulebus.api" in line and "is full" in line]
    assert 1 <= len(api_lines) < len(refusals), api_lines  # not one line per refused request
