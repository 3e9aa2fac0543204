"""
The PromQL metric-name finder the monitoring tests rely on: functions,
aggregations and their label lists, binary-operator modifiers, matchers,
strings, ranges, offsets and Grafana variables are told apart from metric names.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.deploy.promql import PromQLError, metric_names, sample_labels, selectors, series_names


class MetricNamesTests(SynchronousTestCase):
    """L{metric_names} finds exactly the selected metrics."""

    def test_plain_selector(self) -> None:
        """A bare name, and a name with matchers whose values look like names."""
        self.assertEqual(metric_names("up"), {"up"})
        self.assertEqual(
            metric_names('warden_calls_active{job="warden", instance=~"rate|sum"}'),
            {"warden_calls_active"},
        )

    def test_functions_and_aggregations(self) -> None:
        """Function and aggregation names are not metrics; their arguments are read."""
        expr = (
            "histogram_quantile(0.95, sum by (le, method) "
            '(rate(warden_sip_transaction_seconds_bucket{role="server"}[5m])))'
        )
        self.assertEqual(metric_names(expr), {"warden_sip_transaction_seconds_bucket"})

    def test_label_lists_are_not_metrics(self) -> None:
        """by/without before or after the argument, on/ignoring/group_left lists."""
        expr = (
            "sum(rate(a_total[5m])) without (instance, job) / on (job) group_left (node)"
            " sum by (job, node) (b) and ignoring (le) c"
        )
        self.assertEqual(metric_names(expr), {"a_total", "b", "c"})

    def test_keywords_numbers_durations(self) -> None:
        """bool, offset with its duration, inf, scientific and hex numbers, time()."""
        expr = "x - time() < bool 14 * 86400 and y offset 1h5m > 1e-3 or z > inf unless w != 0x1F"
        self.assertEqual(metric_names(expr), {"x", "y", "z", "w"})

    def test_grafana_variables(self) -> None:
        """$var, ${var}, [[var]] and $__rate_interval are not metric names."""
        expr = 'rate(m_total{instance=~"$instance", job="${job}"}[$__rate_interval]) * [[scale]]'
        self.assertEqual(metric_names(expr), {"m_total"})

    def test_name_label(self) -> None:
        """``{__name__="x"}`` selects x; a regular expression on the name is refused."""
        self.assertEqual(metric_names('{__name__="x", job="a"}'), {"x"})
        with self.assertRaises(PromQLError):
            metric_names('{__name__=~"warden_.*"}')

    def test_strings_with_punctuation(self) -> None:
        """Strings may hold parentheses, braces and quotes."""
        expr = r'label_replace(up, "dst", "$1 (\"x\") {y}", "instance", "(.*):\\d+")'
        self.assertEqual(metric_names(expr), {"up"})

    def test_unknown_function_is_an_error(self) -> None:
        """A misspelt function is reported, not taken for a metric."""
        with self.assertRaises(PromQLError) as raised:
            metric_names("rates(x[5m])")
        self.assertIn("rates", str(raised.exception))

    def test_unreadable(self) -> None:
        """Unbalanced parentheses and stray characters are errors."""
        for expr in ("sum(rate(x[5m])", "x ; y", "sum by x"):
            with self.assertRaises(PromQLError):
                metric_names(expr)


class SelectorsTests(SynchronousTestCase):
    """L{selectors} pairs each metric with the labels its own matchers name."""

    def test_labels_of_each_selector(self) -> None:
        """Matchers belong to the selector they follow; label lists are not matchers."""
        expr = (
            'sum by (method) (rate(a_total{method="INVITE", job="w"}[5m]))'
            ' / on (job) b{__name__="b", status_class=~"5.."} + c'
        )
        self.assertEqual(
            selectors(expr),
            [
                ("a_total", frozenset({"method", "job"})),
                ("b", frozenset({"status_class"})),
                ("c", frozenset()),
            ],
        )


class SeriesNamesTests(SynchronousTestCase):
    """L{series_names} knows the series each family type implies."""

    def test_suffixes(self) -> None:
        """Counters give _total, histograms _bucket/_sum/_count, even without samples."""
        text = (
            "# HELP a_total A.\n# TYPE a_total counter\n"
            "# HELP h H.\n# TYPE h histogram\n"
            "# HELP g G.\n# TYPE g gauge\ng 1.0\n"
        )
        names = series_names(text)
        self.assertTrue({"a_total", "h_bucket", "h_sum", "h_count", "g"} <= names)
        self.assertNotIn("a", names)
        self.assertNotIn("g_total", names)


class SampleLabelsTests(SynchronousTestCase):
    """L{sample_labels} reads the label names of each series' samples."""

    def test_labels(self) -> None:
        """Labels per sample name; a family without samples is absent."""
        text = (
            "# HELP a_total A.\n# TYPE a_total counter\n"
            'a_total{method="INVITE",transport="udp"} 1.0\n'
            "# HELP e_total E.\n# TYPE e_total counter\n"
        )
        self.assertEqual(sample_labels(text), {"a_total": {"method", "transport"}})
