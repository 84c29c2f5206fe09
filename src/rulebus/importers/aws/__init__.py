"""``rulebus import aws``: an app folder from CloudFormation/SAM templates and topic rules."""

from __future__ import annotations

from pathlib import Path

from rulebus.errors import RulebusError
from rulebus.importers.aws.convert import Converter
from rulebus.importers.aws.draft import rule_name
from rulebus.importers.aws.output import UNPORTED, app_file, stub_file
from rulebus.importers.aws.report import Report, Status
from rulebus.importers.aws.template import read_template
from rulebus.template import load_app

__all__ = ["REPORT", "Report", "Status", "import_aws"]

REPORT = "IMPORT-REPORT.md"


def import_aws(files: list[Path], out: Path, *, force: bool = False) -> Report:
    """Convert ``files`` into the app folder ``out``; returns the report it also writes.

    Refuses a non-empty ``out`` unless ``force``; even then, a function file
    that has been ported (it no longer says it is unported) is kept.
    """
    templates = [read_template(file) for file in files]
    if out.exists() and not out.is_dir():
        raise RulebusError(f"{out} is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise RulebusError(f"{out} is not empty (--force writes over what is there)")
    converter = Converter(templates, rule_name(out.resolve().name))
    report = converter.run()
    draft = converter.draft
    try:
        (out / "functions").mkdir(parents=True, exist_ok=True)
        for stub in draft.functions.values():
            file = out / "functions" / f"{stub.module}.py"
            if file.exists() and UNPORTED not in file.read_text(encoding="utf-8"):
                continue  # ported since the last import
            file.write_text(stub_file(stub), encoding="utf-8")
        (out / "rulebus.yaml").write_text(app_file(draft, report.files), encoding="utf-8")
        app = load_app(out)
        warnings = f", {len(app.warnings)} warnings" if app.warnings else ""
        report.check = f"`rulebus check` passes{warnings}."
        (out / REPORT).write_text(report.markdown(), encoding="utf-8")
    except OSError as exc:
        raise RulebusError(f"cannot write {out}: {exc.strerror}") from None
    return report
