"""
The metric names a PromQL expression reads, found by a tokenizer that knows
PromQL's functions, aggregation operators, keywords, label matchers, label
lists (``by``, ``without``, ``on``, ``ignoring``, ``group_left``,
``group_right``), ranges, durations and strings, plus Grafana's template
variables (``$instance``, ``${datasource}``, ``$__rate_interval``). Anything else
that looks like a name is a metric name; an unknown function is an error rather
than a guess.

Also L{series_names}: the series names a Prometheus exposition provides, with the
suffixes each family type implies (``_total``, ``_bucket``, ``_sum``, ``_count``),
and L{sample_labels}: the label names its samples carry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from prometheus_client.parser import text_string_to_metric_families

#: PromQL functions (Prometheus 2.x).
FUNCTIONS = frozenset(
    """
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil
    changes clamp clamp_max clamp_min cos cosh count_over_time day_of_month
    day_of_week day_of_year days_in_month deg delta deriv exp floor
    histogram_count histogram_fraction histogram_quantile histogram_sum holt_winters
    hour idelta increase irate label_join label_replace last_over_time ln log10
    log2 max_over_time min_over_time minute month pi predict_linear
    present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh
    sort sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh
    time timestamp vector year
""".split()
)

#: Aggregation operators: ``op (expr)``, ``op by (labels) (expr)``.
AGGREGATIONS = frozenset(
    """
    sum min max avg group stddev stdvar count count_values bottomk topk quantile
""".split()
)

#: Keywords followed by a parenthesised list of label names.
LABEL_LIST_KEYWORDS = frozenset(["by", "without", "on", "ignoring", "group_left", "group_right"])

#: Keywords that are neither metrics nor functions.
KEYWORDS = frozenset(["and", "or", "unless", "bool", "offset", "inf", "nan"])

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<variable>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
  | (?P<range>\[[^\]]*\])
  | (?P<duration>(?:\d+(?:ms|s|m|h|d|w|y))+(?![\w:]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<labels>\{(?:[^{}"'`]|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)*\})
  | (?P<operator>==|!=|<=|>=|=~|!~|[-+*/%^<>=(),@])
    """,
    re.VERBOSE,
)

_MATCHER = re.compile(
    r"""\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)\s*(?:,|$)"""
)


class PromQLError(ValueError):
    """An expression this tokenizer cannot read."""


def tokens(expr: str) -> Iterator[tuple[str, str]]:
    """(kind, text) for each token of ``expr``, whitespace and comments left out."""
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise PromQLError(f"cannot read {expr[position : position + 20]!r} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            yield kind, match.group()
        position = match.end()


def _matchers(block: str, expr: str) -> list[tuple[str, str, str]]:
    """(label, operator, value without quotes) of each matcher of a ``{...}`` block."""
    inner = block[1:-1].strip()
    found = []
    position = 0
    while position < len(inner):
        match = _MATCHER.match(inner, position)
        if match is None:
            raise PromQLError(f"bad label matchers {block!r} in {expr!r}")
        label, op, value = match.groups()
        found.append((label, op, value[1:-1]))
        position = match.end()
    return found


def _selected(name: str | None, block: str, expr: str) -> tuple[str, frozenset[str]] | None:
    """
    The metric a selector names (``name``, or its ``__name__`` matcher) and the
    other labels it matches on; None for a block naming no metric.
    """
    labels = set()
    for label, op, value in _matchers(block, expr) if block else []:
        if label != "__name__":
            labels.add(label)
        elif op != "=":
            raise PromQLError(f"a metric name matched by {op} cannot be checked: {expr!r}")
        else:
            name = value
    return (name, frozenset(labels)) if name is not None else None


def _after_group(items: list[tuple[str, str]], opening: int, expr: str) -> int:
    """The index after the ``)`` closing the ``(`` at ``opening``."""
    depth = 0
    for index in range(opening, len(items)):
        text = items[index][1]
        depth += {"(": 1, ")": -1}.get(text, 0)
        if depth == 0:
            return index + 1
    raise PromQLError(f"unbalanced parentheses in {expr!r}")


def _is_name_of_metric(text: str, following: str, expr: str) -> bool:
    """Whether the name token ``text``, followed by ``following``, is a metric name."""
    if text in KEYWORDS:
        return False
    if following == "(":
        if text in FUNCTIONS or text in AGGREGATIONS:
            return False
        raise PromQLError(f"unknown function {text}() in {expr!r}")
    # ``sum by (job) (x)``: the aggregation comes before its label list.
    return not (text in AGGREGATIONS and following in LABEL_LIST_KEYWORDS)


def selectors(expr: str) -> list[tuple[str, frozenset[str]]]:
    """
    Each metric ``expr`` selects, with the labels its selector matches on.

    Raises:
        PromQLError: unreadable input, unbalanced parentheses, an unknown
            function, or a metric name matched by a regular expression.
    """
    items = list(tokens(expr))
    if sum({"(": 1, ")": -1}.get(text, 0) for _, text in items) != 0:
        raise PromQLError(f"unbalanced parentheses in {expr!r}")
    found: list[tuple[str, frozenset[str]]] = []
    index = 0
    while index < len(items):
        kind, text = items[index]
        following = items[index + 1] if index + 1 < len(items) else ("", "")
        selected = None
        if kind == "labels":
            selected = _selected(None, text, expr)
        elif kind == "name" and text in LABEL_LIST_KEYWORDS:
            # ``by (le, method)`` and the like hold label names only.
            if following[1] != "(":
                raise PromQLError(f"{text} without a label list in {expr!r}")
            index = _after_group(items, index + 1, expr)
            continue
        elif kind == "name" and _is_name_of_metric(text, following[1], expr):
            block = following[1] if following[0] == "labels" else ""
            selected = _selected(text, block, expr)
            index += 1 if block else 0
        if selected is not None:
            found.append(selected)
        index += 1
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects (L{selectors} without the labels)."""
    return {name for name, _ in selectors(expr)}


def series_names(exposition: str) -> set[str]:
    """
    Every series name an exposition provides: each family's samples, plus the
    names its type implies even before a first sample (a labelled counter never
    incremented has none): ``_total`` for counters, ``_bucket``, ``_sum`` and
    ``_count`` for histograms, ``_sum`` and ``_count`` for summaries.
    """
    implied = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(f"{family.name}{suffix}" for suffix in implied.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def sample_labels(exposition: str) -> dict[str, set[str]]:
    """Series name -> the label names its samples carry (series with samples only)."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def missing(referenced: Iterable[str], available: set[str]) -> list[str]:
    """The referenced names not available, sorted."""
    return sorted(set(referenced) - available)
