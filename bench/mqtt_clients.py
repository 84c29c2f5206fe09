"""Figure 9's MQTT clients, each in a process of its own.

``python -m bench.mqtt_clients publish --port P --topic T --n N`` publishes N
QoS 1 messages with up to 1,000 awaiting their PUBACK, and exits once the
broker has acknowledged them all. ``subscribe --port P --topic F`` opens the
baseline's session (subscribed to F, kept by the broker for an hour) and
leaves; ``count --port P --topic F --n N`` resumes it as a plain aiomqtt
subscriber that only counts, and prints ``done FIRST LAST``: the wall-clock
times at which the first and the N-th message arrived.

Both run on uvloop, as rulebus does: the figure is then about what rulebus
does per message, not about the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from typing import Any

import uvloop

WINDOW = 1000
# The bridge's, so that both ask the broker for the same window (MQTT 5's
# default, 65,535, has the broker send the whole backlog at once).
RECEIVE_MAXIMUM = 2000
PAYLOAD = '{{"type":"buy","price":123.45,"n":{}}}'


async def publish(port: int, topic: str, n: int) -> None:
    import aiomqtt

    logging.getLogger("mqtt").setLevel(logging.ERROR)  # notes on pending calls
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=f"bench-pub-{topic}", max_inflight_messages=WINDOW
    ) as client:
        window = asyncio.Semaphore(WINDOW)

        async def one(i: int) -> None:
            try:
                await client.publish(topic, PAYLOAD.format(i), qos=1, timeout=60)
            finally:
                window.release()

        tasks = []
        for i in range(n):
            await window.acquire()
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)


def _client(port: int, client_id: str) -> Any:
    """A client resuming ``client_id``'s session, which the broker keeps for an hour;
    it lets the broker send up to ``RECEIVE_MAXIMUM`` messages before their PUBACKs."""
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    properties.ReceiveMaximum = RECEIVE_MAXIMUM
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=properties,
    )


async def subscribe(port: int, topic_filter: str, client_id: str) -> None:
    async with _client(port, client_id) as client:
        await client.subscribe(topic_filter, qos=1)


async def count(port: int, n: int, client_id: str) -> tuple[float, float]:
    async with _client(port, client_id) as client:
        seen = 0
        first = 0.0
        async for _ in client.messages:
            seen += 1
            if seen == 1:
                first = time.time()
            if seen == n:
                return first, time.time()
    raise RuntimeError("disconnected before the last message")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=("publish", "subscribe", "count"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", required=True, help="publish: the topic; else the filter")
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--client-id", default="bench-counter")
    args = parser.parse_args()
    if args.role == "publish":
        uvloop.run(publish(args.port, args.topic, args.n))
    elif args.role == "subscribe":
        uvloop.run(subscribe(args.port, args.topic, args.client_id))
    else:
        first, last = uvloop.run(count(args.port, args.n, args.client_id))
        print(f"done {first} {last}", flush=True)


if __name__ == "__main__":
    main()
