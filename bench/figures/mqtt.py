"""Figure 9: QoS 1 messages per second from Mosquitto into the bus, durably appended,
against a plain aiomqtt subscriber that only counts them from the same broker.

Both drain a backlog: while the subscriber is away, its persistent session at
the broker collects N messages (published by ``bench/mqtt_clients.py`` with
1,000 awaiting their PUBACK); then the subscriber comes back and its clock
runs from the first message to the N-th, counted by the plain subscriber, or
in rulebus's log (a read-only count polled every 10 ms). A publisher running
beside them would measure the publisher: aiomqtt publishes about 5,500 QoS 1
messages a second here, fewer than either subscriber takes, and
``mosquitto_pub -l`` loses messages at a faster pace (Mosquitto 2.0.11
disconnects it: "out of memory").

The suite starts a Mosquitto of its own with ``max_queued_messages 0``: the
default keeps at most 1,000 messages for a session beyond those in flight.
Turns alternate (counter, rulebus, counter, rulebus, ...), each on a topic of
its own. The rulebus app has no rules: the figure is the bridge and the log.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench.deploy import REPO, Unavailable, child_env, rulebus, serving
from bench.plan import Plan
from bench.proc import Server, free_port
from bench.report import Figure, median, ratio
from bench.stores import TableCounter

TIMEOUT = 600  # seconds for one publish or one drain


@contextlib.contextmanager
def broker(workdir: Path) -> Iterator[int]:
    """A Mosquitto of the suite's own on a free port; yields the port."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise Unavailable("mosquitto is not installed (apt-get install mosquitto)")
    port = free_port()
    conf = workdir / f"mosquitto-{port}.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\n"
    )
    server = Server(
        "mosquitto",
        [binary, "-c", str(conf), "-v"],
        workdir / f"mosquitto-{port}.log",
        ready_pattern=rf"Opening ipv4 listen socket on port {port}",
    )
    with serving(server):
        yield port


def clients(*args: str) -> str:
    """Run ``bench.mqtt_clients ARGS`` to its end; returns what it printed."""
    cmd = [sys.executable, "-m", "bench.mqtt_clients", *args]
    done = subprocess.run(
        cmd, env=child_env(), cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def publish(port: int, topic: str, n: int) -> None:
    clients("publish", "--port", str(port), "--topic", topic, "--n", str(n))


def counter_turn(port: int, topic: str, n: int) -> float:
    """The plain subscriber's messages per second, draining N."""
    session = ("--port", str(port), "--client-id", f"counter-{secrets.token_hex(4)}")
    clients("subscribe", *session, "--topic", topic)
    publish(port, topic, n)
    first, last = map(
        float, clients("count", *session, "--topic", topic, "--n", str(n)).split()[1:]
    )
    return (n - 1) / (last - first)


def rulebus_turn(app: Path, data_dir: Path, port: int, topic: str, n: int) -> float:
    """rulebus's messages per second, draining N into its log."""
    publish(port, topic, n)  # rulebus is stopped: its session keeps them
    log = TableCounter(data_dir / "bus.sqlite3", "events")
    before = log.count()
    try:
        with rulebus(app, data_dir, table="events", bucket=None):
            first = drain(log, before + 1)
            last = drain(log, before + n)
    finally:
        log.close()
    return (n - 1) / (last - first)


def drain(log: TableCounter, rows: int) -> float:
    """When the log held ``rows`` events (polled every 10 ms)."""
    deadline = time.monotonic() + TIMEOUT
    while log.count(at_least=rows) < rows:
        if time.monotonic() > deadline:
            raise RuntimeError(f"rulebus's log did not reach {rows} events in {TIMEOUT} s")
        time.sleep(0.01)
    return time.time()


def app_folder(workdir: Path, port: int) -> Path:
    app = workdir / "mqtt-app"
    app.mkdir(exist_ok=True)
    (app / "rulebus.yaml").write_text(
        "mqtt:\n"
        "  brokers:\n"
        f"    bench: {{url: 'mqtt://127.0.0.1:{port}', client_id: bench-{secrets.token_hex(4)},"
        " session_expiry: 1h}\n"
        "  subscriptions:\n"
        "    - {broker: bench, filter: 'rulebus/#'}\n"
    )
    return app


def measure(plan: Plan) -> Figure:
    n = plan.sizes.mqtt_n
    fig = Figure(
        "9_mqtt",
        "9. MQTT QoS 1 into the bus ÷ plain subscriber",
        unit="msg/s",
        baseline_name="aiomqtt subscriber counting",
        target="report it",
    )
    workdir = plan.run_dir("mqtt")
    data_dir = workdir / "rulebus-data"
    counted: list[float] = []
    appended: list[float] = []
    try:
        with broker(workdir) as port:
            app = app_folder(workdir, port)
            # The first start makes rulebus's session; one event says it subscribed.
            with rulebus(app, data_dir, table="events", bucket=None):
                log = TableCounter(data_dir / "bus.sqlite3", "events")
                deadline = time.monotonic() + 30
                while log.count() == 0 and time.monotonic() < deadline:
                    publish(port, "rulebus/probe", 1)
                    time.sleep(0.5)
                log.close()
            for turn in range(plan.sizes.runs):
                counted.append(counter_turn(port, f"plain/{turn}", n))
                appended.append(rulebus_turn(app, data_dir, port, f"rulebus/{turn}", n))
            fig.notes.append(f"N = {n:,} queued per turn, drained first to last message")
    except Unavailable as exc:
        fig.error = str(exc)
    fig.runs.update(counter_msg_per_s=counted, rulebus_msg_per_s=appended)
    fig.baseline = median(counted)
    fig.value = median(appended)
    fig.ratio = ratio(fig.value, fig.baseline)
    return fig
