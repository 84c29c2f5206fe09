"""CLI errors are one line with a non-zero exit, never a traceback."""

from pathlib import Path

import pytest

from tests.runtime.helpers import EXCHANGE, Server, cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("publish", "a/+/b", "{}"), "error: invalid topic"),
        (("publish", "event/buy", "{nope"), "error: invalid JSON"),
        (("table", "scan", "nosuch"), "error: no table named 'nosuch'"),
        (("bucket", "ls", "nosuch"), "error: no bucket named 'nosuch'"),
        (("bucket", "ls", "Bad/Name"), "error: invalid bucket name"),
        (("publish", "a/b", "\udcff"), "error: invalid JSON"),
        (("up", "examples/exchange", "--port", "70000"), "error: Invalid value for '--port'"),
        (("frobnicate",), "error: No such command 'frobnicate'"),
        (("table", "scan"), "error: Missing argument 'NAME'"),
        (("up", "examples/exchange", "--workers", "0"), "error: Invalid value for '--workers'"),
        (
            ("up", "examples/exchange", "--workers", "2", "--single-process"),
            "error: --workers and --single-process exclude each other",
        ),
        (
            ("worker", "examples/exchange", "--partition", "2/2"),
            "error: Invalid value for '--partition': '2/2': expected K/N",
        ),
    ],
)
def test_errors_are_one_line(
    tmp_path: Path, args: tuple[str, ...], message: str, backends: dict[str, str]
) -> None:
    """Bad arguments print a single error line."""
    (tmp_path / "data").mkdir()
    result = cli(*args, data_dir=tmp_path / "data", env=backends)
    assert result.returncode != 0
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_reading_a_missing_data_dir_says_so(tmp_path: Path) -> None:
    """Commands that read embedded data need it to exist."""
    result = cli("dlq", "ls", data_dir=tmp_path / "nope")
    assert result.returncode == 1
    assert (
        result.stderr.strip() == f"error: no data directory at {tmp_path / 'nope'} (use --data-dir)"
    )


def test_bucket_get_of_a_missing_key_and_an_escaping_key(
    tmp_path: Path, backends: dict[str, str]
) -> None:
    """Missing objects are not found; keys that would leave the bucket are refused."""
    server = Server(EXCHANGE, tmp_path / "data", backends).start()
    server.stop()
    missing = server.cli("bucket", "get", "fraud-archive", "nope.json")
    assert missing.returncode == 1
    assert "no object 'nope.json'" in missing.stderr
    escaping = server.cli("bucket", "get", "fraud-archive", "../../bus.sqlite3")
    assert escaping.returncode == 2
    assert "invalid object key" in escaping.stderr


def test_up_on_a_busy_port_is_one_line(tmp_path: Path, backends: dict[str, str]) -> None:
    """A port in use is reported, not thrown."""
    server = Server(EXCHANGE, tmp_path / "data", backends).start()
    try:
        result = cli(
            "up", str(EXCHANGE), "--port", str(server.port), data_dir=tmp_path / "d2", env=backends
        )
        assert result.returncode == 1
        assert result.stderr.strip().startswith(f"error: cannot listen on 127.0.0.1:{server.port}")
    finally:
        server.stop()


def test_a_second_up_on_a_data_dir_in_use_is_refused(tmp_path: Path) -> None:
    """Another ``up`` on an embedded data directory whose engine runs fails at once,
    naming the process, instead of waiting as an API without an engine."""
    server = Server(EXCHANGE, tmp_path / "data").start()
    try:
        result = cli("up", str(EXCHANGE), "--port", "0", data_dir=tmp_path / "data")
        assert result.returncode == 1
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"error: {tmp_path / 'data'} is in use by another rulebus engine")
        assert server.proc is not None and f"pid {server.proc.pid} (up)" in line
        assert "rulebus api" in line
        assert "listening" not in result.stdout
    finally:
        server.stop()
    # Once it has stopped, the directory is free again.
    again = Server(EXCHANGE, tmp_path / "data").start()
    again.stop()
