"""MQTT in and out against the machine's Mosquitto: subscriptions become events (mapped
topics, clientid(), ids, rejected payloads), a broker that goes away and comes back,
no acknowledged message lost to kill -9, and the ``mqtt`` action reaching a subscriber."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import httpx
import pytest

from tests.runtime.helpers import (
    Server,
    cli,
    free_port,
    make_certificate,
    scrape,
    value,
    wait_until,
)
from tests.services.mqtt import (
    Proxy,
    Subscriber,
    clear_retained,
    private_broker,
    publish,
    unique,
)

pytestmark = pytest.mark.usefixtures("mosquitto")


def write_app(tmp_path: Path, body: str) -> Path:
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    (app / "rulebus.yaml").write_text(textwrap.dedent(body))
    return app


def bridged_app(tmp_path: Path, prefix: str, *, port: int = 1883, extra: str = "") -> Path:
    """An app that brings ``PREFIX/+/temp`` in as ``plant/DEVICE/temp`` into table temps."""
    return write_app(
        tmp_path,
        f"""
        tables:
          temps: {{key: [id]}}
        mqtt:
          brokers:
            plant:
              url: mqtt://127.0.0.1:{port}
              client_id: {unique("rulebus-test")}
              session_expiry: 2m
          subscriptions:
            - broker: plant
              filter: "{prefix}/+/temp"
              topic: "plant/${{topic(2)}}/temp"
        rules:
          store:
            sql: SELECT *, topic(2) AS device, clientid() AS client FROM 'plant/+/temp'
            actions:
              - table: {{name: temps}}
        {extra}
        """,
    )


def by_id(server: Server) -> dict[str, dict[str, object]]:
    return {row["id"]: row for row in server.scan("temps")}


def test_messages_become_events_with_mapped_topics_client_ids_and_rejections(
    tmp_path: Path, backends: dict[str, str]
) -> None:
    """A message is an event on the mapped topic with the publisher's clientid() (or the
    bridge's), its own id (a repeat is a duplicate); what is not a JSON object is
    rejected, counted and shown in /admin/stats and /metrics. On either bus."""
    prefix = unique("sensors")
    server = Server(bridged_app(tmp_path, prefix), tmp_path / "data", backends).start()
    wait_until(lambda: server.stats()["mqtt"]["plant"]["connected"], what="the bridge")
    publish(
        [
            (f"{prefix}/d1/temp", json.dumps({"id": "m1", "t": 21.5}), {"clientid": "dev-1"}),
            (f"{prefix}/d2/temp", json.dumps({"t": 19}), {}),
            (f"{prefix}/d1/temp", json.dumps({"id": "m1", "t": 99}), {}),  # a repeat
            (f"{prefix}/d3/temp", b"not json", {}),
            (f"{prefix}/d3/temp", b"[1, 2]", {}),
            (f"{prefix}/d.3/temp", json.dumps({"t": 1}), {}),  # '.' is not one word
        ]
    )
    rows = wait_until(lambda: len(by_id(server)) == 2 and by_id(server), what="two rows")
    assert rows["m1"] == {"id": "m1", "t": 21.5, "device": "d1", "client": "dev-1"}
    (other,) = [row for key, row in rows.items() if key != "m1"]
    stats = server.stats()["mqtt"]["plant"]
    assert other["device"] == "d2" and other["client"] == stats["client_id"]
    assert stats["messages"] == {"accepted": 2, "duplicate": 1, "rejected": 3}
    assert stats["last_rejected"].startswith(f"{prefix}/d.3/temp: invalid topic level 'd.3'")
    samples = scrape(server.url, server.key)
    assert value(samples, "rulebus_mqtt_messages_total", broker="plant", outcome="rejected") == 3
    assert value(samples, "rulebus_mqtt_connected", broker="plant") == 1
    assert "rejected a message on" in "".join(server.output)


def test_a_broker_that_goes_away_is_shown_and_what_it_kept_arrives_after_it_returns(
    tmp_path: Path,
) -> None:
    """With the broker unreachable, /admin/stats says so with the error; once it is back
    the bridge connects, and messages published while the bridge was cut off arrive
    (its session outlives the connection)."""
    prefix = unique("sensors")
    proxy = Proxy(free_port())
    server = Server(bridged_app(tmp_path, prefix, port=proxy.port), tmp_path / "data").start()
    down = wait_until(lambda: server.stats()["mqtt"]["plant"], what="stats")
    assert down["connected"] is False and down["error"]

    proxy.start()
    wait_until(lambda: server.stats()["mqtt"]["plant"]["connected"], what="connected")
    publish([(f"{prefix}/d1/temp", json.dumps({"id": "before"}), {})])
    wait_until(lambda: "before" in by_id(server), what="the first message")

    proxy.cut()
    wait_until(lambda: not server.stats()["mqtt"]["plant"]["connected"], what="disconnected")
    assert server.stats()["mqtt"]["plant"]["error"]
    publish([(f"{prefix}/d1/temp", json.dumps({"id": "while-away"}), {})])
    proxy.start()
    wait_until(lambda: "while-away" in by_id(server), timeout=60, what="the kept message")
    assert server.stats()["mqtt"]["plant"]["connected"] is True


@pytest.mark.parametrize("stop", ["kill -9", "SIGTERM"])
def test_no_qos1_message_the_broker_acknowledged_is_lost_when_rulebus_stops(
    tmp_path: Path, stop: str
) -> None:
    """A publisher sends 2,000 QoS 1 messages while rulebus is killed (-9), or stopped
    (SIGTERM), and started again: every one ends up an event. Redelivered ones come
    back with their ids and are counted as duplicates, not stored twice."""
    prefix = unique("sensors")
    app = bridged_app(tmp_path, prefix)
    data = tmp_path / "data"
    server = Server(app, data).start()
    wait_until(lambda: server.stats()["mqtt"]["plant"]["connected"], what="the bridge")
    total = 2000
    acked: list[int] = []
    # Mosquitto keeps at most 1,000 messages for a session that is away (its
    # max_queued_messages): the pace keeps the backlog of the restart below that.
    publisher = threading.Thread(
        target=lambda: acked.append(
            publish(
                (
                    (f"{prefix}/d{i % 7}/temp", json.dumps({"id": f"m{i}", "n": i}), {})
                    for i in range(total)
                ),
                rate=400,
            )
        )
    )
    publisher.start()
    wait_until(lambda: len(by_id(server)) >= 300, what="300 events in")
    if stop == "kill -9":
        server.kill9()
    else:
        assert server.stop() == 0
    at_kill = len(server.scan("temps"))
    restarted = Server(app, data).start()
    publisher.join(60)
    assert acked == [total]
    rows = wait_until(
        lambda: len(by_id(restarted)) >= total and by_id(restarted), timeout=60, what="all"
    )
    assert set(rows) == {f"m{i}" for i in range(total)}
    stats = restarted.stats()["mqtt"]["plant"]["messages"]
    print(
        f"{stop} with {at_kill} of {total} in the table; after the restart"
        f" {stats['accepted']} more, {stats['duplicate']} redelivered duplicates dropped by id"
    )
    assert at_kill < total  # the stream went on across the stop
    assert stats["rejected"] == 0


def test_the_mqtt_action_publishes_with_qos_and_retain_and_failures_dead_letter(
    tmp_path: Path,
) -> None:
    """A rule's output reaches an MQTT subscriber on the rendered topic, with the QoS,
    the retain flag and a message id; a broker that cannot be reached fails retryably
    until the delivery is dead-lettered, with the reason."""
    out = unique("out")
    app = write_app(
        tmp_path,
        f"""
        retry: {{attempts: 2, backoff: 50ms, max_backoff: 100ms}}
        mqtt:
          brokers:
            plant: {{url: mqtt://127.0.0.1:1883}}
        rules:
          forward:
            sql: SELECT id, level * 2 AS double FROM 'alarms/+'
            actions:
              - mqtt: {{broker: plant, topic: "{out}/${{topic(2)}}", qos: 1, retain: true}}
          nowhere:
            sql: SELECT * FROM 'lost/+'
            actions:
              - mqtt: {{url: "mqtt://127.0.0.1:{free_port()}", topic: "{out}/lost"}}
        """,
    )
    server = Server(app, tmp_path / "data").start()
    live = Subscriber(f"{out}/#")
    try:
        server.post("/topics/alarms/boiler", {"id": "a1", "level": 4})
        wait_until(lambda: live.received, what="the message")
        (got,) = live.received
        assert got.topic == f"{out}/boiler" and json.loads(got.payload) == {"id": "a1", "double": 8}
        assert got.qos == 1 and got.properties["rulebus-message-id"]
        late = Subscriber(f"{out}/boiler")  # subscribes after: gets the retained copy
        wait_until(lambda: late.received, what="the retained message")
        assert late.received[0].retain is True
        late.close()

        server.post("/topics/lost/x", {"id": "l1"})
        (dead,) = wait_until(server.dead_letters, what="a dead letter")
        assert dead["rule"] == "nowhere" and "cannot connect" in json.dumps(dead)
    finally:
        live.close()
        clear_retained(f"{out}/boiler")


def test_a_rule_publishing_back_into_a_subscription_stops_after_max_hops(tmp_path: Path) -> None:
    """The mqtt action marks its messages with their hops and the bridge reads them
    back, so a rule whose messages come back in stops as republish loops do."""
    prefix = unique("loop")
    app = write_app(
        tmp_path,
        f"""
        mqtt:
          brokers:
            plant: {{url: mqtt://127.0.0.1:1883, client_id: {unique("rulebus-test")},
                     session_expiry: 1m}}
          subscriptions:
            - {{broker: plant, filter: "{prefix}/#"}}
        rules:
          echo:
            sql: SELECT n + 1 AS n FROM '{prefix}/#'
            actions:
              - mqtt: {{broker: plant, topic: "{prefix}/again", qos: 1}}
        """,
    )
    server = Server(app, tmp_path / "data").start()
    wait_until(lambda: server.stats()["mqtt"]["plant"]["connected"], what="the bridge")
    publish([(f"{prefix}/start", json.dumps({"n": 1}), {})])
    (dead,) = wait_until(server.dead_letters, what="the loop's end")
    assert "passed through 16 rules" in json.dumps(dead)
    assert server.stats()["mqtt"]["plant"]["messages"]["accepted"] == 17


@pytest.mark.parametrize(
    ("mqtt", "rule_action", "line", "message"),
    [
        (
            'subscriptions: [{broker: plant, filter: "a/#/b"}]',
            "",
            5,
            "mqtt.subscriptions[0].filter: invalid topic filter 'a/#/b'",
        ),
        (
            'subscriptions: [{broker: nope, filter: "a/+"}]',
            "",
            5,
            "mqtt.subscriptions[0].broker: unknown broker 'nope' (declared: plant)",
        ),
        (
            'subscriptions: [{broker: plant, filter: "a/+", topic: "b/+/${topic(2)}"}]',
            "",
            5,
            "mqtt.subscriptions[0].topic: invalid topic 'b/+/${topic(2)}'",
        ),
        (
            "",
            '{mqtt: {broker: plant, topic: "x/#", qos: 1}}',
            9,
            "rules.r.actions[0].mqtt.topic: invalid MQTT topic 'x/#': wildcards",
        ),
        (
            "",
            '{mqtt: {broker: plant, topic: "x", qos: 2}}',
            9,
            "rules.r.actions[0].mqtt.qos: expected 0 or 1, got 2",
        ),
    ],
)
def test_bad_options_fail_the_check_at_their_line(
    tmp_path: Path, mqtt: str, rule_action: str, line: int, message: str
) -> None:
    """Filters, mapped topics, broker names, action topics and QoS are checked at load time."""
    app = write_app(
        tmp_path,
        f"""
        mqtt:
          brokers:
            plant: {{url: mqtt://127.0.0.1:1883}}
          {mqtt}
        rules:
          r:
            sql: SELECT * FROM 'a/+'
            actions: [{rule_action or "{log: {}}"}]
        """,
    )
    result = cli("check", str(app))
    assert result.returncode == 2
    assert f"rulebus.yaml:{line}: {message}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_check_warns_about_a_password_in_the_broker_url(tmp_path: Path) -> None:
    """A password written in the app file is allowed, with a warning at its line."""
    app = write_app(
        tmp_path,
        """
        mqtt:
          brokers:
            plant: {url: "mqtt://bridge:secret@127.0.0.1:1883"}
        rules:
          r: {sql: "SELECT * FROM 'a/+'", actions: [{log: {}}]}
        """,
    )
    result = cli("check", str(app))
    assert result.returncode == 0, result.stderr
    assert "rulebus.yaml:4: a password written in the app file" in result.stderr


def test_an_api_process_with_no_mqtt_leaves_the_subscriptions_to_up(tmp_path: Path) -> None:
    """``rulebus api --no-mqtt`` beside ``rulebus up`` serves the API without connecting
    to the broker, so the two never take the client id's session from each other."""
    prefix = unique("sensors")
    app = bridged_app(tmp_path, prefix)
    server = Server(app, tmp_path / "data").start()
    before = wait_until(
        lambda: server.stats()["mqtt"]["plant"]["connected"] and server.stats()["mqtt"]["plant"],
        what="the bridge",
    )
    port = free_port()
    cmd = [sys.executable, "-m", "rulebus", "api", str(app), "--no-mqtt"]
    cmd += ["--data-dir", str(tmp_path / "data"), "--port", str(port)]
    api = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert api.stdout is not None
        for line in api.stdout:
            if "listening on" in line:
                break
        stats = httpx.get(
            f"http://127.0.0.1:{port}/admin/stats",
            headers={"authorization": f"Bearer {server.key}"},
        ).json()
        assert "mqtt" not in stats
        publish([(f"{prefix}/d1/temp", json.dumps({"id": "once"}), {})])
        wait_until(lambda: "once" in by_id(server), what="the message")
        after = server.stats()["mqtt"]["plant"]
        assert after["connected"] is True and after["since"] == before["since"]
    finally:
        api.terminate()
        api.wait(20)


def test_tls_and_login_in_and_out(tmp_path: Path) -> None:
    """Over mqtts with a CA from the app folder and a login from the environment, a
    rule's mqtt action reaches the broker and the bridge brings the message back in;
    a refused login shows in /admin/stats."""
    cert, key, ca = make_certificate(tmp_path)
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "bridge", "s3cret"], check=True)
    config = f"certfile {cert}\nkeyfile {key}\npassword_file {passwords}\nallow_anonymous false"
    with private_broker(tmp_path, config) as port:
        app = write_app(
            tmp_path,
            f"""
            tables:
              back: {{key: [id]}}
            mqtt:
              brokers:
                secure:
                  url: mqtts://127.0.0.1:{port}
                  username_env: MQTT_USER
                  password_env: MQTT_PASSWORD
                  tls: {{ca: {ca}}}
              subscriptions:
                - {{broker: secure, filter: "panel/+", topic: "back/${{topic(2)}}"}}
            rules:
              out:
                sql: SELECT id, level FROM 'alarms/+'
                actions:
                  - mqtt: {{broker: secure, topic: "panel/${{topic(2)}}", qos: 1}}
              in:
                sql: SELECT * FROM 'back/+'
                actions:
                  - table: {{name: back}}
            """,
        )
        login = {"MQTT_USER": "bridge", "MQTT_PASSWORD": "s3cret"}
        server = Server(app, tmp_path / "data", login).start()
        wait_until(lambda: server.stats()["mqtt"]["secure"]["connected"], what="connected")
        server.post("/topics/alarms/boiler", {"id": "a1", "level": 4})
        rows = wait_until(lambda: server.scan("back"), what="the round trip")
        assert rows == [{"id": "a1", "level": 4}]
        server.stop()

        wrong = Server(app, tmp_path / "data2", {**login, "MQTT_PASSWORD": "nope"}).start()
        state = wait_until(lambda: wrong.stats()["mqtt"]["secure"]["error"] and wrong.stats())
        assert state["mqtt"]["secure"]["connected"] is False
        assert "authori" in state["mqtt"]["secure"]["error"].lower()


def test_a_reload_that_changes_the_subscriptions_says_they_wait_for_a_restart(
    tmp_path: Path,
) -> None:
    """Subscriptions are read at start: a reload that changes them is logged as not
    applied, and the bridge stays connected as it was."""
    prefix = unique("sensors")
    app = bridged_app(tmp_path, prefix)
    server = Server(app, tmp_path / "data").start()
    wait_until(lambda: server.stats()["mqtt"]["plant"]["connected"], what="the bridge")
    yaml = app / "rulebus.yaml"
    yaml.write_text(yaml.read_text().replace(f"{prefix}/+/temp", f"{prefix}/+/humidity"))
    server.cli("reload", check=True)
    wait_until(lambda: "the mqtt section changed" in "".join(server.output), what="warning")
    assert server.stats()["mqtt"]["plant"]["connected"] is True


def test_rulebus_graph_draws_subscriptions_as_sources(tmp_path: Path) -> None:
    """A subscription is a source box: into its mapped topic, or, without a mapping,
    straight into the rule filters that share topics with it."""
    app = write_app(
        tmp_path,
        """
        mqtt:
          brokers:
            plant: {url: mqtt://127.0.0.1:1883}
          subscriptions:
            - {broker: plant, filter: "sensors/+/temp", topic: "plant/${topic(2)}"}
            - {broker: plant, filter: "raw/#"}
        rules:
          mapped: {sql: "SELECT * FROM 'plant/+'", actions: [{log: {}}]}
          raw: {sql: "SELECT * FROM 'raw/+'", actions: [{log: {}}]}
        """,
    )
    drawn = cli("graph", str(app), check=True).stdout
    assert '(["MQTT subscription<br/>plant: sensors/+/temp"])' in drawn
    assert "mqtt_plant_sensors_temp --> topic_plant_topic_2" in drawn
    assert "topic_plant_topic_2 -.-> filter_plant" in drawn
    assert "mqtt_plant_raw -.-> filter_raw" in drawn
