"""Templates → the draft of an app, and a report entry for every resource."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rulebus.backends.base import validate_bucket
from rulebus.config.source import Path_, dotted
from rulebus.errors import BadInput, TemplateError
from rulebus.importers.aws import rules
from rulebus.importers.aws.actions import Skip
from rulebus.importers.aws.draft import (
    Draft,
    Names,
    Stub,
    bucket_name,
    kebab,
    module_name,
    rule_name,
    table_name,
)
from rulebus.importers.aws.intrinsics import Resolver, Unresolved
from rulebus.importers.aws.report import Entry, Report
from rulebus.importers.aws.template import Template

# The property that holds each kind's physical name, and what kind of rulebus name it gets.
NAMED = {
    "AWS::DynamoDB::Table": ("TableName", "table"),
    "AWS::DynamoDB::GlobalTable": ("TableName", "table"),
    "AWS::S3::Bucket": ("BucketName", "bucket"),
    "AWS::SNS::Topic": ("TopicName", "notification"),
    "AWS::Lambda::Function": ("FunctionName", "function"),
    "AWS::Serverless::Function": ("FunctionName", "function"),
    "AWS::IoT::TopicRule": ("RuleName", "rule"),
    "AWS::SQS::Queue": ("QueueName", "rule"),
    "AWS::Kinesis::Stream": ("Name", "rule"),
}
SANITIZE: dict[str, Callable[[str], str]] = {
    "table": table_name,
    "bucket": bucket_name,
    "notification": rule_name,
    "function": rule_name,
    "rule": rule_name,
}
NOT_NEEDED = {
    "AWS::IAM::Role": "rulebus has no IAM: what runs is what the app file says",
    "AWS::IAM::Policy": "rulebus has no IAM: what runs is what the app file says",
    "AWS::IAM::ManagedPolicy": "rulebus has no IAM: what runs is what the app file says",
    "AWS::IAM::InstanceProfile": "rulebus has no IAM",
    "AWS::Lambda::Permission": "rules call functions without permissions",
    "AWS::IoT::Policy": "clients publish with API keys (rulebus keys create --topics ...)",
    "AWS::Logs::LogGroup": "rulebus logs to its own output",
    "AWS::SQS::Queue": "the amqp action declares its RabbitMQ queue (durable) at its first send",
    "AWS::SQS::QueuePolicy": "RabbitMQ has no queue policies here",
    "AWS::SNS::TopicPolicy": "rulebus has no IAM",
    "AWS::S3::BucketPolicy": "rulebus has no IAM",
    "AWS::Kinesis::Stream": "XADD creates the Redis stream at the first send",
}
API_GATEWAY = ("AWS::ApiGateway", "AWS::Serverless::Api", "AWS::Serverless::HttpApi")
# Properties that change nothing in rulebus and are not worth a line of the report.
QUIET = {"Tags", "Description", "Role", "RoleArn", "Policies", "Architectures", "Tracing"}


@dataclass
class Props:
    """One mapping of a template, read by its camelCase or PascalCase keys."""

    conv: Converter
    template: Template
    entry: Entry
    data: dict[str, Any]
    path: Path_

    def key(self, name: str) -> str | None:
        for key in (name, name[0].upper() + name[1:]):
            if key in self.data:
                return key
        return None

    def has(self, name: str) -> bool:
        return self.key(name) is not None

    def get(self, name: str) -> Any:
        key = self.key(name)
        if key is None:
            return None
        try:
            return self.conv.resolver(self.template).resolve(self.data[key], self.entry)
        except Unresolved as exc:
            raise Skip(f"{self.where(name)}: {exc}") from None

    def text(self, name: str) -> str | None:
        value = self.get(name)
        if isinstance(value, dict | list):
            raise Skip(f"{self.where(name)}: expected a string")
        return None if value is None else str(value)

    def need(self, name: str) -> str:
        value = self.text(name)
        if not value:
            raise Skip(f"{self.where()}: no {name}")
        return value

    def sub(self, name: str) -> Props:
        key = self.key(name) or name
        value = self.data.get(key)
        if not isinstance(value, dict):
            raise Skip(f"{self.where(name)}: expected a mapping")
        return Props(self.conv, self.template, self.entry, value, (*self.path, key))

    def where(self, name: str | None = None) -> str:
        key = None if name is None else self.key(name) or name
        path = self.path if key is None else (*self.path, key)
        shown = path[2:] if path[:1] == ("Resources",) else path
        return f"`{dotted(shown)}` (line {self.template.line(path)})"

    def note(self, name: str, text: str) -> None:
        self.entry.change(f"{self.where(name)}: {text}")


class Converter:
    def __init__(self, templates: list[Template], app_name: str) -> None:
        self.templates = templates
        self.draft = Draft(app_name)
        self.report = Report([t.file for t in templates])
        self.names: dict[str, str] = {}  # logical id → app name, over all templates
        self.physical: dict[tuple[str, str], str] = {}  # (kind, AWS name) → app name
        self.unique = Names()
        self._resolvers: dict[str, Resolver] = {}
        self.topic_entries: dict[str, Entry] = {}
        self.rule = ""  # the rule being converted, for the functions it calls

    def resolver(self, template: Template) -> Resolver:
        if template.file not in self._resolvers:
            self._resolvers[template.file] = Resolver(
                template.source.data, self.names, self.draft.name
            )
        return self._resolvers[template.file]

    # References from actions: the app name of a table, bucket, topic or function,
    # declared here if no resource of the templates declares it.

    def _lookup(self, kind: str, reference: str) -> tuple[str, bool]:
        name = re.split(r"[:/]", reference.rstrip("/"))[-1]
        if (kind, name) in self.physical:
            return self.physical[(kind, name)], True
        app_name = self.unique.claim(kind, SANITIZE[kind](name))
        self.physical[(kind, name)] = app_name
        return app_name, False

    def table(self, reference: str, key: list[str], entry: Entry) -> str:
        name, known = self._lookup("table", reference)
        if not known:
            self.draft.tables[name] = key or ["id"]
            entry.change(
                f"table {name} is not in the templates: declared with key"
                f" {', '.join(self.draft.tables[name])}"
                + ("" if key else " (a guess: set it to the table's key)")
            )
        return name

    def bucket(self, reference: str, entry: Entry) -> str:
        name, known = self._lookup("bucket", reference)
        if not known:
            self.draft.buckets.append(name)
            entry.change(f"bucket {name} is not in the templates: declared")
        return name

    def notification(self, reference: str, entry: Entry) -> str:
        name, known = self._lookup("notification", reference)
        if not known:
            self.draft.notifications[name] = [{"log": {}}]
            entry.change(
                f"SNS topic {name} is not in the templates: a notification with a log"
                " subscriber (add its subscribers)"
            )
        return name

    def function(self, reference: str, entry: Entry) -> str:
        name, known = self._lookup("function", reference)
        if not known:
            self.draft.functions[name] = Stub(name, module_name(name), "(not in the templates)")
            entry.change(f"function {name} is not in the templates: an unported stub")
        self.draft.functions[name].rules.append(self.rule)
        return name

    def run(self) -> Report:
        resources = [
            (template, logical_id, spec)
            for template in self.templates
            for logical_id, spec in self._resources(template)
        ]
        for template, logical_id, spec in resources:
            self._name(template, logical_id, spec)
        # What rules refer to comes first, whatever the order of the templates.
        declarations = (
            "AWS::DynamoDB::",
            "AWS::S3::Bucket",
            "AWS::SNS::Topic",
            "AWS::Lambda::Function",
            "AWS::Serverless::Function",
        )
        first = [r for r in resources if str(r[2].get("Type", "")).startswith(declarations)]
        for template, logical_id, spec in first + [r for r in resources if r not in first]:
            self._convert(template, logical_id, spec)
        for template in self.templates:
            if template.is_topic_rule:
                self._topic_rule_json(template)
        for name, subscribers in self.draft.notifications.items():
            if not subscribers:
                subscribers.append({"log": {}})
                self.topic_entries[name].change("no subscriber converted: a log subscriber")
        self.report.entries.sort(key=lambda e: (self.report.files.index(e.file), e.line or 0))
        return self.report

    def _resources(self, template: Template) -> list[tuple[str, dict[str, Any]]]:
        resources = template.source.data.get("Resources") or {}
        out = []
        for logical_id, spec in resources.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("Type"), str):
                raise TemplateError(
                    "expected a resource with a Type",
                    file=template.file,
                    line=template.line(("Resources", logical_id)),
                    key=f"Resources.{logical_id}",
                )
            out.append((logical_id, spec))
        return out

    def _name(self, template: Template, logical_id: str, spec: dict[str, Any]) -> None:
        if spec["Type"] not in NAMED:
            self.names[logical_id] = logical_id
            return
        prop, kind = NAMED[spec["Type"]]
        physical = logical_id
        value = (spec.get("Properties") or {}).get(prop)
        if value is not None:
            scratch = Entry(template.file, None, logical_id, spec["Type"])
            try:
                physical = self.resolver(template).text(value, scratch)
            except Unresolved:
                physical = logical_id
        elif kind == "bucket":
            physical = kebab(logical_id)
        app_name = self.unique.claim(kind, SANITIZE[kind](physical))
        self.names[logical_id] = app_name
        self.physical[(kind, physical)] = app_name
        self.physical[(kind, app_name)] = app_name

    def _topic_rule_json(self, template: Template) -> None:
        """What ``aws iot get-topic-rule`` prints: ``{"ruleArn", "rule": {...}}``."""
        rule = template.source.data["rule"]
        aws_name = str(rule.get("ruleName") or Path(template.file).stem)
        entry = Entry(template.file, template.line(("rule",)), aws_name, "AWS::IoT::TopicRule")
        self.report.entries.append(entry)
        name = self.unique.claim("rule", rule_name(aws_name))
        try:
            rules.write_rule(self, Props(self, template, entry, rule, ("rule",)), name)
        except Skip as exc:
            entry.refuse(str(exc))

    def _entry(self, template: Template, logical_id: str, type_: str) -> Entry:
        entry = Entry(template.file, template.line(("Resources", logical_id)), logical_id, type_)
        self.report.entries.append(entry)
        return entry

    def _convert(self, template: Template, logical_id: str, spec: dict[str, Any]) -> None:
        type_ = spec["Type"]
        entry = self._entry(template, logical_id, type_)
        if type_ in NOT_NEEDED:
            entry.not_needed(NOT_NEEDED[type_])
            return
        convert = RESOURCES.get(type_)
        if convert is None and type_.startswith(API_GATEWAY):
            entry.refuse(
                "API Gateway is not converted: the routes it implies are in the entries of"
                " its methods, routes or functions' Api events"
            )
            return
        if convert is None:
            entry.refuse(f"rulebus has no counterpart of {type_}")
            return
        properties = spec.get("Properties") or {}
        path: Path_ = ("Resources", logical_id, "Properties")
        props = Props(self, template, entry, properties, path)
        if "Condition" in spec:
            entry.change(f"Condition {spec['Condition']} is not evaluated: converted as if true")
        try:
            convert(self, props, logical_id)
        except Skip as exc:
            entry.refuse(str(exc))

    # Resources.

    def _table(self, p: Props, logical_id: str) -> None:
        key = ["", ""]
        for item in p.get("keySchema") or []:
            field, kind = item.get("AttributeName"), item.get("KeyType")
            key[kind == "RANGE"] = field
        if not key[0]:
            raise Skip(f"{p.where('keySchema')}: no HASH key")
        name = self.names[logical_id]
        self.draft.tables[name] = [field for field in key if field]
        p.entry.became.append(f"table `{name}`")
        self._ignored(p, {"TableName", "KeySchema", "AttributeDefinitions"})

    def _bucket(self, p: Props, logical_id: str) -> None:
        name = self.names[logical_id]
        wanted = p.text("bucketName")
        try:
            validate_bucket(wanted or name)
        except BadInput as exc:
            p.entry.change(f"{exc.message}: renamed {name}")
        self.draft.buckets.append(name)
        p.entry.became.append(f"bucket `{name}`")
        self._ignored(p, {"BucketName"})

    def _topic(self, p: Props, logical_id: str) -> None:
        name = self.names[logical_id]
        subscribers = self.draft.notifications.setdefault(name, [])
        for i, item in enumerate(p.data.get("Subscription") or []):
            sub = Props(self, p.template, p.entry, item, (*p.path, "Subscription", i))
            self._subscriber(sub, subscribers)
        p.entry.became.append(f"notification `{name}`")
        self.topic_entries[name] = p.entry
        self._ignored(p, {"TopicName", "Subscription", "DisplayName"})

    def _subscription(self, p: Props, logical_id: str) -> None:
        name = self.notification(p.need("topicArn"), p.entry)
        subscribers = self.draft.notifications[name]
        self._subscriber(p, subscribers)
        p.entry.became.append(f"a subscriber of `{name}`")
        self._ignored(p, {"TopicArn", "Protocol", "Endpoint"})

    def _subscriber(self, p: Props, subscribers: list[dict[str, Any]]) -> None:
        protocol = (p.text("protocol") or "").lower()
        endpoint = p.need("endpoint")
        if protocol in ("http", "https"):
            subscribers.append({"webhook": {"url": endpoint}})
            p.note("endpoint", "a webhook: signed only once you give it a secret (secret_env)")
        elif protocol in ("email", "email-json"):
            subscribers.append(
                {
                    "email": {
                        "smtp": "smtp://127.0.0.1:25",
                        "from": "rulebus@localhost",
                        "to": [endpoint],
                    }
                }
            )
            p.note(
                "endpoint",
                "mail through the SMTP server smtp://127.0.0.1:25 from rulebus@localhost"
                " (set smtp and from)",
            )
        else:
            p.note(
                "protocol",
                f"{protocol} subscriber {endpoint!r} not converted: notifications reach"
                " webhooks, email and the log (a rule on the alert's topic can call a function)",
            )

    def _ignored(self, p: Props, used: set[str]) -> None:
        left = sorted(set(p.data) - used - QUIET)
        if left:
            p.entry.change(f"ignored: {', '.join(left)} (no counterpart in rulebus)")


RESOURCES: dict[str, Callable[[Converter, Props, str], None]] = {
    "AWS::DynamoDB::Table": Converter._table,
    "AWS::DynamoDB::GlobalTable": Converter._table,
    "AWS::S3::Bucket": Converter._bucket,
    "AWS::SNS::Topic": Converter._topic,
    "AWS::SNS::Subscription": Converter._subscription,
    "AWS::IoT::TopicRule": rules.topic_rule,
    "AWS::Lambda::Function": rules.function,
    "AWS::Serverless::Function": rules.function,
    "AWS::ApiGateway::Method": rules.api_method,
    "AWS::ApiGatewayV2::Route": rules.api_route,
}
