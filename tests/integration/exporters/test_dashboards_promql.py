"""Every dashboard expression is valid PromQL, checked by a real Prometheus (one server for the
module): the committed dashboards cannot ship a query Grafana would show as an error."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests._fixtures.grafana_dashboards import Query, concrete, load_dashboards, queries
from tests._fixtures.prometheus_proc import PrometheusProcess

DASHBOARDS = load_dashboards()
QUERIES = queries(DASHBOARDS)


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusProcess]:
    server = PrometheusProcess()
    server.start()
    yield server
    server.stop()


def test_the_prometheus_check_rejects_malformed_promql(prometheus: PrometheusProcess) -> None:
    status, body = prometheus.query("sum by (model (rate(costwatch_cost_usd_total[5m]))")
    assert status == 400 and body["errorType"] == "bad_data"
    status, body = prometheus.query("sum(rate(costwatch_cost_usd_total[5m]))")
    assert status == 200 and body["status"] == "success"


@pytest.mark.parametrize("query", QUERIES, ids=str)
def test_every_expression_is_valid_promql(prometheus: PrometheusProcess, query: Query) -> None:
    status, body = prometheus.query(concrete(query.expr))
    assert status == 200 and body.get("status") == "success", (
        f"{query}: {body.get('errorType')}: {body.get('error')}\n{query.expr}"
    )


def test_every_variable_query_selects_with_valid_promql(prometheus: PrometheusProcess) -> None:
    variables = [
        v for d in DASHBOARDS.values() for v in d["templating"]["list"] if v["type"] == "query"
    ]
    assert variables
    for variable in variables:
        match = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["definition"])
        assert match, variable["definition"]
        status, body = prometheus.api("/api/v1/series", **{"match[]": concrete(match[1])})
        assert status == 200, f"{variable['name']}: {body.get('error')}"
