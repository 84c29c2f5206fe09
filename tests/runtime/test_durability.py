"""An acknowledged event survives kill -9 and is processed exactly once in the table."""

import concurrent.futures
import threading

import httpx
from fraud import is_fraud

from tests.runtime.helpers import Receiver, Server, cli, scan, wait_until


def test_acknowledged_events_survive_kill_9_and_processing_resumes(
    tmp_path, receiver: Receiver
) -> None:
    """Events acked before a kill -9 are all in the table after a restart, once each."""
    from tests.runtime.conftest import SECRET
    from tests.runtime.helpers import EXCHANGE

    env = {"RULEBUS_FRAUD_WEBHOOK_URL": receiver.url, "RULEBUS_FRAUD_WEBHOOK_SECRET": SECRET}
    data = tmp_path / "data"
    server = Server(EXCHANGE, data, env=env).start()
    acked: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(timeout=10) as http:
            for i in range(400):
                if stop.is_set():
                    return
                kind = "buy" if i % 2 else "sell"
                try:
                    r = http.post(server.url + "/event", json={"type": kind, "n": n * 1000 + i})
                except httpx.HTTPError:
                    return  # the server died under us: this one was not acknowledged
                if r.status_code == 202:
                    with lock:
                        acked.add(r.json()["id"])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client, n) for n in range(8)]
        wait_until(lambda: len(acked) >= 300, what="300 acks")
        server.kill9()
        stop.set()
        for f in futures:
            f.result()
    assert len(acked) >= 300

    restarted = Server(EXCHANGE, data, env=env).start()
    try:
        wait_until(
            lambda: restarted.idle() and acked <= {r["id"] for r in scan("events", data)},
            timeout=60,
            what="all acked events in the table",
        )
        rows = scan("events", data)
        ids = [row["id"] for row in rows]
        assert len(ids) == len(set(ids))  # one row per event, replays included
        assert acked <= set(ids)
        # The derived pipeline completed too: every flagged buy was archived.
        flagged = {row["id"] for row in rows if row["type"] == "buy" and is_fraud(row["id"])}
        keys = cli("bucket", "ls", "fraud-archive", data_dir=data, check=True).stdout.split()
        assert {k.removesuffix(".json") for k in keys} == flagged
    finally:
        restarted.stop()


def test_graceful_stop_then_restart_processes_everything_once(tmp_path) -> None:
    """SIGTERM stops cleanly; events published while it was down are processed at the next start."""
    from tests.runtime.helpers import EXCHANGE

    data = tmp_path / "data"
    server = Server(EXCHANGE, data).start()
    for i in range(10):
        assert server.post("/event", {"type": "sell", "id": f"s-{i}"}).status_code == 202
    assert server.stop() == 0
    assert (
        cli(
            "publish", "event/sell", '{"id": "offline-1", "type": "sell"}', data_dir=data
        ).returncode
        == 0
    )
    again = Server(EXCHANGE, data).start()
    try:
        wait_until(lambda: again.idle() and len(scan("events", data)) == 11, what="11 rows")
    finally:
        again.stop()


def test_a_killed_engine_worker_is_restarted_and_catches_up(tmp_path) -> None:
    """kill -9 of one worker process loses nothing: ``up`` restarts it and it finishes its
    share of the work, while the other worker goes on."""
    import os
    import signal

    from tests.runtime.helpers import EXCHANGE

    data = tmp_path / "data"
    server = Server(EXCHANGE, data).start()
    try:
        workers = wait_until(lambda: len(server.worker_pids()) == 2 and server.worker_pids())
        victim, other = workers
        for i in range(5):
            response = server.post(
                "/events", [{"type": "sell", "id": f"w{i}-{j}"} for j in range(200)]
            )
            assert response.status_code == 200
            if i == 1:
                os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids(),
            what="a new worker",
        )
        assert other in server.worker_pids()
        wait_until(
            lambda: server.idle() and len(scan("events", data)) == 1000,
            timeout=60,
            what="1000 rows",
        )
    finally:
        server.stop()


def test_changing_the_number_of_workers_between_runs_loses_nothing(tmp_path) -> None:
    """Each worker takes its share of the log; restarted with another number of
    workers, the engine resumes where every share was done, and nothing is skipped."""
    from tests.runtime.helpers import EXCHANGE

    data = tmp_path / "data"
    expected = 0
    for workers in ("3", "1", "2"):
        server = Server(EXCHANGE, data, None, "--workers", workers).start()
        try:
            assert len(wait_until(server.worker_pids)) == int(workers)
            for i in range(4):
                batch = [{"type": "sell", "id": f"{workers}-{i}-{j}"} for j in range(150)]
                assert server.post("/events", batch).status_code == 200
                expected += 150
            wait_until(
                lambda: server.idle() and len(scan("events", data)) == expected,  # noqa: B023
                timeout=60,
                what=f"{expected} rows with {workers} workers",
            )
        finally:
            # Stopped with work of other shares possibly still unrecorded
            # after the last batch: the next run must pick that up.
            server.stop()
