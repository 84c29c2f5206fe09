"""How big each figure's workload is, in quick and full mode, and where runs keep files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sizes:
    runs: int  # each figure is the median of this many runs (at least 3)
    ingest_seconds: float  # figure 1: seconds of load per run
    pipeline_n: int  # figure 2: events through the exchange pipeline
    peer_n: int  # figure 3: events through both rulebus and the peer
    rules_n: int  # figure 4: events per rule-count setting
    latency_seconds: float  # figure 5: seconds at the steady rate
    latency_rate: float  # figure 5: events per second
    storage_n: int  # figure 7: rows of raw SQLite inserts
    distributed_n: int  # figure 8: events through distributed rulebus and the peer
    mqtt_n: int  # figure 9: QoS 1 messages queued per turn for rulebus and for the plain subscriber
    batch_size: int = 1000  # items per POST /events, and rows per raw transaction
    batch_concurrency: int = 4  # batches in flight at once
    connections: int = 32  # figure 1's connections


QUICK = Sizes(
    runs=3,
    ingest_seconds=2,
    pipeline_n=20_000,
    peer_n=1_000,  # the peer takes about 5 s per 1,000 events on a slow day
    rules_n=5_000,
    latency_seconds=2,
    latency_rate=5_000,
    storage_n=20_000,
    distributed_n=1_000,
    mqtt_n=20_000,
)
FULL = Sizes(
    runs=3,
    ingest_seconds=10,
    pipeline_n=1_000_000,
    peer_n=50_000,
    rules_n=200_000,
    latency_seconds=20,
    latency_rate=5_000,
    storage_n=1_000_000,
    distributed_n=50_000,
    mqtt_n=100_000,
)


@dataclass
class Plan:
    quick: bool
    sizes: Sizes
    workdir: Path  # a fresh temporary directory on the disk under test
    # Figure 2's events/s, once measured: figure 7 compares it with the storage ceiling.
    pipeline_events_per_s: float | None = None

    def run_dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path
