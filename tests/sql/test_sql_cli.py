"""``rulebus sql eval`` through click's CliRunner: exit codes and exact output."""

from __future__ import annotations

from click.testing import CliRunner

from rulebus.cli import main


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["sql", "eval", *args])
    return result.exit_code, result.stdout, result.stderr


RULE = "SELECT *, upper(type) AS t FROM 'event/+' WHERE price > 100"


def test_firing_rule_prints_output_json_and_exits_0() -> None:
    """A rule that fires prints its output as JSON on stdout."""
    code, out, err = invoke(
        "--sql", RULE, "--topic", "event/buy", "--payload", '{"type":"buy","price":123.45}'
    )
    assert (code, out, err) == (0, '{"type": "buy", "price": 123.45, "t": "BUY"}\n', "")


def test_where_not_true_prints_no_match_and_exits_1() -> None:
    """A WHERE that is not true prints `no match` on stderr."""
    code, out, err = invoke("--sql", RULE, "--topic", "event/buy", "--payload", '{"price":1}')
    assert (code, out, err) == (1, "", "no match\n")


def test_topic_not_matching_prints_no_match_and_exits_1() -> None:
    """A topic outside the FROM filter prints `no match`."""
    code, out, err = invoke("--sql", RULE, "--topic", "other/buy", "--payload", '{"price":500}')
    assert (code, out, err) == (1, "", "no match\n")


def test_invalid_sql_prints_one_line_and_exits_2() -> None:
    """A syntax error is one line on stderr, with its position, and no traceback."""
    code, out, err = invoke("--sql", "SELECT * FORM 'a'", "--topic", "a", "--payload", "{}")
    assert code == 2 and out == ""
    assert err.startswith("error: syntax error: unexpected 'FORM'")
    assert err.endswith("(line 1, column 10)\n") and err.count("\n") == 1


def test_invalid_payload_is_an_error() -> None:
    """A --payload that is not JSON is a one-line error."""
    code, out, err = invoke("--sql", "SELECT * FROM 'a'", "--topic", "a", "--payload", "{x")
    assert code == 2 and out == ""
    assert err.startswith("error: --payload is not valid JSON:") and err.count("\n") == 1


def test_invalid_topic_is_an_error() -> None:
    """A --topic with a wildcard is a one-line error."""
    code, out, err = invoke("--sql", "SELECT * FROM 'a/+'", "--topic", "a/+", "--payload", "{}")
    assert (code, out) == (2, "")
    assert err == (
        "error: invalid topic 'a/+': wildcards '+' and '#' are only allowed in topic filters\n"
    )


def test_sql_version_option() -> None:
    """--sql-version selects the version; an unknown one is a one-line error."""
    args = ["--sql", "SELECT VALUE 10.0 FROM 'a'", "--topic", "a", "--payload", "{}"]
    assert invoke(*args, "--sql-version", "2015-10-08")[:2] == (0, "10.0\n")
    assert invoke(*args)[:2] == (0, "10\n")
    code, _, err = invoke(*args, "--sql-version", "beta")
    assert code == 2 and err.startswith("error: unknown SQL version 'beta'")


def test_select_value_of_a_string_prints_json() -> None:
    """Non-object outputs are printed as JSON too."""
    code, out, _ = invoke(
        "--sql", "SELECT VALUE topic(2) FROM 'a/+'", "--topic", "a/b", "--payload", "{}"
    )
    assert (code, out) == (0, '"b"\n')
