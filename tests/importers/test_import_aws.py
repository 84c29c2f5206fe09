"""``rulebus import aws`` through the CLI: the app it writes, its report, and the app running."""

from __future__ import annotations

import json
from pathlib import Path

from rulebus.template import load_app
from tests.runtime.helpers import ROOT, Server, cli, wait_until

TEMPLATES = Path(__file__).parent / "templates"
EXCHANGE = ROOT / "examples" / "aws" / "exchange-template.yaml"
INPUTS = [TEMPLATES / "actions.yaml", TEMPLATES / "rule.json", TEMPLATES / "stack.json"]


def run_import(out: Path, *files: Path, extra: tuple[str, ...] = ()) -> dict:
    result = cli("import", "aws", *map(str, files), "--out", str(out), "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def entries(report: dict) -> dict[str, dict]:
    return {entry["resource"]: entry for entry in report["resources"]}


def test_every_action_kind_becomes_its_rulebus_action(tmp_path: Path) -> None:
    """Each topic rule action maps to its rulebus kind, and the app passes rulebus check."""
    report = run_import(tmp_path / "app", *INPUTS)
    app = load_app(tmp_path / "app")
    every = app.rules["EveryAction"]
    assert [a.kind for a in every.actions] == [
        "table", "table", "object", "notify", "function", "republish",
        "http", "amqp", "redis_stream", "log",
    ]  # fmt: skip
    assert every.sql_version == "2015-10-08" and not every.enabled
    assert every.error_action is not None and every.error_action.kind == "republish"
    assert app.tables["plant_readings"].key == ("device",)  # Fn::Join of a parameter default
    assert "plant-raw" in app.buckets  # Fn::Sub with a parameter
    assert "alarms" in app.notifications  # Fn::Sub with pseudo parameters, an ARN
    assert app.rules["hot_rooms"].sql_version == "2016-03-23"  # get-topic-rule JSON
    assert app.tables["Orders"].key == ("order",)  # a JSON template
    check = cli("check", str(tmp_path / "app"))
    assert check.returncode == 0, check.stderr
    assert "function enrich: functions.enrich:handler is not ported yet" in check.stderr

    found = entries(report)
    every_entry = found["EveryAction"]
    assert (every_entry["status"], every_entry["line"]) == ("converted with a change", 14)
    changes = "\n".join(every_entry["changes"])
    for expected in (
        "Firehose not converted",
        "Timestream not converted",
        "parameter NoDefault has no Default",
        "CannedAcl` (line 24): dropped",
        "AWS::Region is taken as 'local'",
    ):
        assert expected in changes
    assert found["RefusedSql"]["status"] == "converted with a change"
    assert not app.rules["RefusedSql"].enabled
    text = (tmp_path / "app" / "rulebus.yaml").read_text()
    assert "# SELECT get_dynamodb('t', 'k', id, 'arn:role') AS extra FROM 'sensors/#'" in text
    assert (found["Unknown"]["status"], found["Unknown"]["line"]) == ("not converted", 44)
    assert found["Perm"]["status"] == found["Queue"]["status"] == "not needed"
    assert found["hot_rooms"]["file"].endswith("rule.json") and found["hot_rooms"]["line"] == 3
    assert "cloudwatchMetric not converted" in "".join(found["hot_rooms"]["changes"])
    markdown = (tmp_path / "app" / "IMPORT-REPORT.md").read_text()
    assert "| `Unknown` | AWS::EC2::Instance |" in markdown and "actions.yaml:44" in markdown


def test_the_same_input_gives_the_same_bytes(tmp_path: Path) -> None:
    """Two imports of the same templates write identical folders."""
    for run in ("one", "two"):
        run_import(tmp_path / run / "app", *INPUTS, EXCHANGE)
    first = tmp_path / "one" / "app"
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert Path("functions/enrich.py") in files and Path("IMPORT-REPORT.md") in files
    for file in files:
        assert (first / file).read_bytes() == (tmp_path / "two" / "app" / file).read_bytes()


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """Missing files, invalid YAML and non-templates are refused with file and line."""
    (tmp_path / "broken.yaml").write_text("Resources:\n  A: [\n")
    (tmp_path / "plain.yaml").write_text("name: not a template\n")
    for file, message in (
        ("missing.yaml", "missing.yaml: file not found"),
        ("broken.yaml", "broken.yaml:3: invalid YAML"),
        ("plain.yaml", "plain.yaml:1: not a CloudFormation or SAM template"),
    ):
        result = cli("import", "aws", str(tmp_path / file), "--out", str(tmp_path / "out"))
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: ") and message in result.stderr
        assert len(result.stderr.splitlines()) == 1
    run_import(tmp_path / "app", EXCHANGE)
    again = cli("import", "aws", str(EXCHANGE), "--out", str(tmp_path / "app"))
    assert again.returncode == 1 and "is not empty" in again.stderr
    run_import(tmp_path / "app", EXCHANGE, extra=("--force",))


def test_unported_function_refuses_and_ported_one_survives_force(tmp_path: Path) -> None:
    """A stub fails its deliveries until ported; --force keeps a ported handler."""
    app = tmp_path / "app"
    run_import(app, EXCHANGE)
    stub = (app / "functions" / "fraud_check.py").read_text()
    for fact in ("fraud-check", "nodejs18.x", "src/fraud.check", "FraudCheckFunctionBuys"):
        assert fact in stub
    ported = "def handler(event, ctx):\n    ctx.publish('alert/fraud', event)\n"
    (app / "functions" / "fraud_check.py").write_text(ported)
    run_import(app, EXCHANGE, extra=("--force",))
    assert (app / "functions" / "fraud_check.py").read_text() == ported
    check = cli("check", str(app))
    assert "fraud-check" not in check.stderr and "IngestFunction" in check.stderr


def test_the_imported_exchange_runs(tmp_path: Path) -> None:
    """The exchange made from its AWS template stores events in the table its rule names."""
    app = tmp_path / "exchange"
    report = run_import(app, EXCHANGE)
    assert report["summary"] == {"converted with a change": 7, "not needed": 1}
    server = Server(app, tmp_path / "data").start()
    try:
        answer = server.post("/topics/event/sell", {"id": "e1", "type": "sell", "amount": 3})
        assert answer.status_code == 202, answer.text
        rows = wait_until(lambda: server.scan("events"), what="the event's row")
        assert rows[0]["id"] == "e1" and rows[0]["payload"]["amount"] == 3
        assert isinstance(rows[0]["ts"], int)
        assert server.post("/event", {"type": "buy"}).status_code == 202
    finally:
        server.stop(timeout=10)
