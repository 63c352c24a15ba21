"""The online service over real HTTP: `bentoml serve` on a free loopback port against a small trained store.

The store (400 synthetic members) is trained here with tiny trainer settings (tests/fixtures/serving/*.yaml) into a
private MLflow store, promoted to `champion`, and materialized as an online table; then every endpoint is called and
schemathesis fuzzes the OpenAPI document for server errors.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.loadgen import post_json
from benchmarks.serving_store import build_trained_store
from serving.launch import RunningServer, serve
from serving.schemas import EXAMPLE_HISTORY

pytestmark = [pytest.mark.http, pytest.mark.timeout(900)]

MODELS = ("churn", "ltv", "timing", "recs")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = build_trained_store(tmp_path_factory.mktemp("served"))
    with serve(env, ready_timeout=180) as srv:
        yield srv


@pytest.fixture(scope="module")
def member_id(server: RunningServer) -> str:
    """The member with the most orders in the online table."""
    import duckdb

    con = duckdb.connect(server.env["MEMBER_ML_ONLINE_TABLE"], read_only=True)
    try:
        return con.execute("SELECT member_id FROM features ORDER BY orders_lifetime DESC LIMIT 1").fetchone()[0]
    finally:
        con.close()


def test_ready_health_metrics(server: RunningServer) -> None:
    import urllib.request

    for path in ("/readyz", "/healthz", "/livez"):
        with urllib.request.urlopen(server.url + path, timeout=10) as r:
            assert r.status == 200
    post_json(server.url + "/echo", {"member_id": "m"})
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    assert "bentoml_service_request_total" in text and 'endpoint="/echo"' in text


def test_score_by_member_id(server: RunningServer, member_id: str) -> None:
    status, body = post_json(server.url + "/score", {"member_id": member_id, "top_n": 5})
    assert status == 200, body
    assert body["source"] == "online_table" and body["unavailable"] == {}
    assert set(body["model_versions"]) == set(MODELS)
    assert 0 <= body["churn"]["probability"] <= 1 and body["churn"]["reasons"]
    assert body["ltv"]["value"] >= 0
    probs = list(body["next_purchase"]["probability_within_days"].values())
    assert probs == sorted(probs)  # a CDF over horizons
    assert 1 <= len(body["recommendations"]) <= 5
    assert body["loyalty"]["tier"] is not None and body["loyalty"]["value_segment"] is not None


def test_score_by_inline_history(server: RunningServer) -> None:
    status, body = post_json(server.url + "/score", {"history": EXAMPLE_HISTORY, "top_n": 3})
    assert status == 200, body
    assert body["source"] == "inline_history" and body["unavailable"] == {}
    assert body["loyalty"]["tier"] == "钻石" and body["churn"] is not None and len(body["recommendations"]) == 3


def test_recommend_quote_tier(server: RunningServer, member_id: str) -> None:
    status, body = post_json(server.url + "/recommend", {"member_id": member_id, "n": 4})
    assert status == 200 and len(body["recommendations"]) == 4, body
    cats = {"美妆", "母婴", "服饰", "数码", "家居", "食品"}
    status, body2 = post_json(server.url + "/recommend", {"member_id": member_id, "n": 4,
                                                          "exclude_categories": sorted(cats)})
    assert status == 200 and len(body2["recommendations"]) <= 4
    status, body = post_json(server.url + "/quote", {"member_id": member_id, "cart": [{"price": 250, "quantity": 2}]})
    assert status == 200 and body["subtotal"] == 500 and body["points"] >= 0, body
    status, body = post_json(server.url + "/tier", {"history": EXAMPLE_HISTORY})
    assert status == 200 and body["loyalty"]["tier"] == "钻石", body


def test_unknown_member_and_bad_input(server: RunningServer) -> None:
    status, body = post_json(server.url + "/score", {"member_id": "no-such-member"})
    assert status == 404 and body["field"] == "member_id"
    bad = json.loads(json.dumps(EXAMPLE_HISTORY))
    bad["orders"].reverse()
    status, body = post_json(server.url + "/score", {"history": bad})
    assert status == 400 and "ordered_at" in json.dumps(body)
    big = {"history": {**EXAMPLE_HISTORY, "orders": EXAMPLE_HISTORY["orders"] * 1},
           "pad": "x" * (2 << 20)}
    status, body = post_json(server.url + "/score", big)
    assert status == 413


def test_schemathesis_finds_no_server_error(server: RunningServer) -> None:
    st = Path(sys.executable).parent / "st"
    r = subprocess.run([str(st), "run", f"{server.url}/docs.json", "--checks", "not_a_server_error",
                        "--max-examples", "15", "--seed", "7", "--request-timeout", "30", "--no-color"],
                       capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
