"""Topic filters (MQTT semantics) and topic-name validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rulebus.errors import BadInput, SqlError
from rulebus.sql import TopicFilter, compile_rule, validate_topic

MATCHES: list[tuple[str, str, bool]] = [
    ("a/b", "a/b", True),
    ("a/b", "a/c", False),
    # The FROM page's examples.
    ("a/#", "a/b", True),
    ("a/#", "a/c", True),
    ("a/#", "a/e/f", True),
    ("a/#", "b/x", False),
    ("a/+", "a/b", True),
    ("a/+", "a/e/f", False),
    ("a/+", "b/x", False),
    # MQTT 3.1.1: `a/#` also matches the parent level `a` (AWS's page says "one or more").
    ("a/#", "a", True),
    ("#", "a/b/c", True),
    ("+/+", "a/b", True),
    ("+", "a/b", False),
    ("a/+/c", "a/b/c", True),
    ("a/+", "a/", True),
    # Wildcards at the start do not match `$` topics; explicit `$` filters do.
    ("#", "$aws/things", False),
    ("+/things", "$aws/things", False),
    ("$aws/#", "$aws/things", True),
    ("$aws/things", "$aws/things", True),
]


@pytest.mark.parametrize(("pattern", "topic", "expected"), MATCHES)
def test_filter_matching(pattern: str, topic: str, expected: bool) -> None:
    """Filters match by MQTT rules: + one level, # the rest including the parent."""
    assert TopicFilter(pattern).matches(topic) is expected


@pytest.mark.parametrize(
    "pattern",
    ["", "a/#/b", "a#", "a/b+", "+a", "a/b/c/d/e/f/g/h/i", "x" * 257, "a\x00b"],
)
def test_invalid_filters_are_rejected(pattern: str) -> None:
    """Misplaced wildcards, more than 8 levels, >256 bytes, NUL and empty filters fail."""
    with pytest.raises(SqlError, match="invalid topic filter"):
        TopicFilter(pattern)


def test_eight_levels_are_allowed() -> None:
    """A filter or topic may have exactly 8 levels (7 slashes), as in AWS IoT."""
    assert TopicFilter("a/b/c/d/e/f/g/#").levels[-1] == "#"
    assert validate_topic("a/b/c/d/e/f/g/h") == "a/b/c/d/e/f/g/h"


def test_invalid_from_filter_points_at_the_topic() -> None:
    """A bad FROM filter is a compile error positioned at the quoted filter."""
    with pytest.raises(SqlError, match="'#' must be a whole level") as caught:
        compile_rule("SELECT *\nFROM 'a/#/b'")
    assert (caught.value.line, caught.value.column) == (2, 6)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("", "empty"),
        ("a/+", "wildcards"),
        ("a/#", "wildcards"),
        ("$aws/x", "reserved"),
        ("a//b", "empty level"),
        ("/a", "empty level"),
        ("a/", "empty level"),
        ("a/b/c/d/e/f/g/h/i", "more than 8 levels"),
        ("é" * 129, "256 bytes"),
        ("a\x00", "NUL"),
    ],
)
def test_invalid_topic_names(topic: str, reason: str) -> None:
    """validate_topic rejects topic names that cannot be published to, saying why."""
    with pytest.raises(BadInput, match=reason):
        validate_topic(topic)


LEVEL = st.sampled_from(["a", "b", "c", "$x"])


@given(
    st.lists(LEVEL, min_size=1, max_size=8),
    st.lists(st.sampled_from(["a", "b", "+"]), max_size=7),
    st.booleans(),
)
def test_filter_matches_like_a_reference_implementation(
    topic_levels: list[str], filter_levels: list[str], multi: bool
) -> None:
    """The matcher agrees with a straightforward level-by-level reference."""
    levels = [*filter_levels, "#"] if multi else filter_levels
    if not levels:
        return
    topic = "/".join(topic_levels)
    pattern = "/".join(levels)

    def reference() -> bool:
        if topic.startswith("$") and levels[0] in ("+", "#"):
            return False
        for i, want in enumerate(levels):
            if want == "#":
                return True
            if i >= len(topic_levels) or want not in ("+", topic_levels[i]):
                return False
        return len(topic_levels) == len(levels)

    assert TopicFilter(pattern).matches(topic) is reference()


@given(st.lists(st.text("ab$", max_size=3), min_size=1, max_size=4))
def test_a_filter_without_wildcards_matches_only_itself(parts: list[str]) -> None:
    """A wildcard-free filter (empty levels allowed) matches exactly its own text."""
    text = "/".join(parts) or "z"
    assert TopicFilter(text).matches(text)
    assert not TopicFilter(text).matches(text + "/x")


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("event/+", "event/buy", True),
        ("event/#", "event", True),
        ("event/#", "alert/fraud", False),
        ("event/buy", "event/sell", False),
        ("+/buy", "event/+", True),
        ("a/b", "a/b/c", False),
        ("a/+/c", "a/b/#", True),
        ("#", "anything/at/all", True),
    ],
)
def test_filters_overlap_when_some_topic_matches_both(a: str, b: str, overlap: bool) -> None:
    """Two filters overlap exactly when a topic exists that both match (either order)."""
    from rulebus.sql.topics import filters_overlap

    levels = (tuple(a.split("/")), tuple(b.split("/")))
    assert filters_overlap(*levels) is overlap
    assert filters_overlap(*reversed(levels)) is overlap
