"""In-process tests of the online service (ASGI app + starlette TestClient): validation at the edge, rules-only
endpoints, authentication, body limit, logs without personal data, degraded start without models/online table."""
from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from serving.config import ServingConfigError, load_serving_config
from serving.schemas import EXAMPLE_HISTORY

HIST = EXAMPLE_HISTORY


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The service with no registered models and no online table (rules-only), private MLflow store.

    Built once per module: BentoML registers its Prometheus metrics per app, so a second app in one process fails.
    """
    tmp = tmp_path_factory.mktemp("serving")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        mp.setenv("MEMBER_ML_ONLINE_TABLE", str(tmp / "absent.duckdb"))
        mp.setenv("MEMBER_ML_STORE", str(tmp / "absent-store"))
        mp.setenv("MEMBER_ML_SERVING_MAX_BODY_BYTES", "20000")
        mp.delenv("MEMBER_ML_SERVING_TOKEN", raising=False)
        from serving.service import MemberScoring

        with TestClient(MemberScoring.to_asgi()) as c:
            yield c


def _detail(r) -> str:  # noqa: ANN001
    return json.dumps(r.json(), ensure_ascii=False)


def test_tier_from_history(client: TestClient) -> None:
    r = client.post("/tier", json={"history": HIST})
    assert r.status_code == 200, r.text
    lv = r.json()["loyalty"]
    # 268 + 899 + 129.5 = 1296.5 paid: 钻石 (1000–2999) by the default ladder, 1703.5 short of 皇冠 (3000)
    assert lv["tier"] == "钻石" and lv["next_tier"] == "皇冠"
    assert lv["spend_to_next_tier"] == pytest.approx(1703.5)
    assert lv["benefits"]["discount_rate"] < 1


def test_quote_applies_tier_discount(client: TestClient) -> None:
    r = client.post("/quote", json={"history": HIST, "cart": [{"price": 100, "quantity": 2}]})
    assert r.status_code == 200, r.text
    q = r.json()
    assert q["subtotal"] == 200 and q["total"] == pytest.approx(200 * q["discount_rate"])
    assert q["points"] > 0 and q["tier"] == "钻石"


def test_score_inline_without_models_says_which_are_unavailable(client: TestClient) -> None:
    r = client.post("/score", json={"history": HIST})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["loyalty"]["tier"] == "钻石"
    assert set(body["unavailable"]) == {"churn", "ltv", "timing", "recs"}
    assert "champion" in body["unavailable"]["churn"]
    assert body["churn"] is None and body["model_versions"] == {}
    assert client.get("/readyz").status_code == 503  # not ready until every model is loaded
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(("mutate", "field", "status"), [
    (lambda b: b["history"]["orders"].reverse(), "orders[1].ordered_at", 400),
    (lambda b: b["history"]["orders"][0].update(amount=-5), "amount", 400),
    (lambda b: b["history"]["orders"][0].pop("order_id"), "order_id", 400),
    (lambda b: b["history"]["orders"][0].update(ordered_at="yesterday-ish"), "ordered_at", 400),
    (lambda b: b["history"]["orders"][0].update(status="stolen"), "status", 400),
    (lambda b: b["history"]["events"][0].update(type="teleport"), "type", 400),
    (lambda b: b["history"].update(as_of="2024-04-01T00:00:00"), "is not before as_of", 400),
    (lambda b: b.update(member_id="M1"), "send exactly one", 400),
    (lambda b: b.update(top_n=0), "top_n", 400),
    (lambda b: b.update(surprise=1), "surprise", 400),
])
def test_bad_score_requests_name_the_field(client: TestClient, mutate, field: str, status: int) -> None:  # noqa: ANN001
    body = {"history": copy.deepcopy(HIST)}
    mutate(body)
    r = client.post("/score", json=body)
    assert r.status_code == status, r.text
    assert field in _detail(r)


def test_malformed_json_and_wrong_types(client: TestClient) -> None:
    r = client.post("/score", content=b'{"member_id": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "json_invalid" in r.text
    r = client.post("/quote", json={"history": HIST, "cart": [{"price": "free"}]})
    assert r.status_code == 400 and "price" in r.text
    r = client.post("/quote", json={"history": HIST, "cart": []})
    assert r.status_code == 400 and "cart" in r.text


def test_member_lookup_without_online_table_is_explained(client: TestClient) -> None:
    r = client.post("/score", json={"member_id": "M1"})
    assert r.status_code == 503
    assert r.json()["field"] == "member_id" and "online feature table" in r.json()["error"]


def test_oversized_payload_is_413(client: TestClient) -> None:
    big = copy.deepcopy(HIST)
    big["orders"] = [{"order_id": f"o{i}", "ordered_at": f"2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}",
                      "amount": 1.0} for i in range(400)]
    r = client.post("/score", json={"history": big})
    assert r.status_code == 413 and r.json()["field"] == "body"
    # chunked (no Content-Length) is limited too
    raw = json.dumps({"history": big}).encode()
    r = client.post("/score", content=iter([raw[:10000], raw[10000:]]), headers={"content-type": "application/json"})
    assert r.status_code == 413


def _tiny_app(middleware, **kw):  # noqa: ANN001, ANN202
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def ok(request):  # noqa: ANN001, ANN202
        return JSONResponse({"n": len(await request.body())})

    app = Starlette(routes=[Route("/tier", ok, methods=["POST"]), Route("/healthz", ok)])
    return middleware(app, **kw)


def test_bearer_token() -> None:
    from serving.middleware import BearerAuthMiddleware

    c = TestClient(_tiny_app(BearerAuthMiddleware, token="s3cret"))
    assert c.post("/tier", json={}).status_code == 401
    r = c.post("/tier", json={}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["field"] == "Authorization"
    assert r.headers["www-authenticate"] == "Bearer"
    assert c.post("/tier", json={}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/healthz").status_code == 200  # probes stay open


def test_edge_middleware_reads_the_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.middleware import BearerAuthMiddleware
    from serving.service import EdgeMiddleware

    monkeypatch.setenv("MEMBER_ML_SERVING_TOKEN", "abc")
    edge = EdgeMiddleware(lambda *a: None)
    assert isinstance(edge.app.app, BearerAuthMiddleware)
    monkeypatch.delenv("MEMBER_ML_SERVING_TOKEN")
    assert not isinstance(EdgeMiddleware(lambda *a: None).app.app, BearerAuthMiddleware)


def test_logs_carry_no_personal_data(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret_member = "member-with-a-name-张三"
    hist = {**copy.deepcopy(HIST), "member_id": secret_member}
    client.post("/tier", json={"history": hist})
    bad = copy.deepcopy(hist)
    bad["orders"][0]["amount"] = -1
    client.post("/score", json={"history": bad})
    client.post("/score", json={"member_id": secret_member})
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "/tier" in text and "/score" in text  # the requests were logged ...
    assert secret_member not in text and "浙江" not in text  # ... without the member or their data


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=20) | st.integers(),
                            lambda children: st.lists(children, max_size=4)
                            | st.dictionaries(st.sampled_from(["member_id", "history", "orders", "cart", "amount",
                                                               "ordered_at", "top_n", "n", "price"]), children,
                                              max_size=4), max_leaves=12))
def test_arbitrary_json_never_gives_a_server_error(client: TestClient, payload: object) -> None:
    for path in ("/score", "/tier", "/quote", "/recommend"):
        r = client.post(path, content=json.dumps(payload), headers={"content-type": "application/json"})
        assert r.status_code < 500 or r.status_code == 503, (path, payload, r.text)


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("max_body_bytes: -1\n")
    with pytest.raises(ServingConfigError, match="max_body_bytes"):
        load_serving_config(p, env={})
    p.write_text("models: [churn]\nunknown_key: 1\n")
    with pytest.raises(ServingConfigError, match="unknown_key"):
        load_serving_config(p, env={})
    cfg = load_serving_config(None, env={"MEMBER_ML_SERVING_TOKEN": "t", "MEMBER_ML_SERVING_MAX_BODY_BYTES": "5"})
    assert cfg.token == "t" and cfg.max_body_bytes == 5


def test_openapi_document_renders_with_examples(client: TestClient) -> None:
    r = client.get("/docs.json")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert {"/score", "/recommend", "/quote", "/tier"} <= set(doc["paths"])
    schemas = doc["components"]["schemas"]
    assert schemas["ScoreRequestIODescriptor"]["example"]["member_id"] and schemas["History"]["example"]["orders"]


def test_ready_needs_models_and_the_online_table() -> None:
    """/readyz: not ready while the configured online table is missing, even with every model loaded."""
    from types import SimpleNamespace

    from serving.models import ModelSet
    from serving.service import is_ready

    cfg = load_serving_config(env={})
    all_loaded, missing = ModelSet(), ModelSet(unavailable={"churn": "no champion"})
    assert is_ready(SimpleNamespace(config=cfg, models=all_loaded, online=object()))
    assert not is_ready(SimpleNamespace(config=cfg, models=all_loaded, online=None))
    assert not is_ready(SimpleNamespace(config=cfg, models=missing, online=object()))
    no_table = cfg.model_copy(update={"online_table": None})
    assert is_ready(SimpleNamespace(config=no_table, models=all_loaded, online=None))


@pytest.mark.parametrize("ctype", ["multipart/form-data", "text/plain", "application/x-www-form-urlencoded"])
def test_non_json_content_type_gets_415(client: TestClient, ctype: str) -> None:
    r = client.post("/score", content=json.dumps({"history": HIST}), headers={"content-type": ctype})
    assert r.status_code == 415 and r.json()["field"] == "Content-Type"
    r = client.post("/echo", content=b'{"member_id": "m"}', headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200


def test_openapi_document_is_openapi_30() -> None:
    """No 2020-12-only keywords reach the 3.0 document: nullable instead of type null, boolean exclusive bounds."""
    from serving.schemas import QuoteRequest, ScoreRequest, openapi30

    text = json.dumps([ScoreRequest.model_json_schema(), QuoteRequest.model_json_schema()])
    assert '"type": "null"' not in text and '"const"' not in text
    cart = QuoteRequest.model_json_schema()["$defs"]["CartLineIn"]["properties"]["quantity"]
    assert cart["minimum"] == 0 and cart["exclusiveMinimum"] is True
    assert openapi30({"anyOf": [{"type": "string"}, {"type": "null"}], "title": "T"}) == \
        {"type": "string", "title": "T", "nullable": True}


def test_precompute_is_bounded_and_switchable() -> None:
    """Above precompute_max_members (or switched off) nothing is precomputed: every request is scored live."""
    from types import SimpleNamespace

    from serving.models import ModelSet
    from serving.precompute import precompute

    online = SimpleNamespace(table=[0] * 50)  # only len() is consulted before the bound check
    cfg = load_serving_config(env={"MEMBER_ML_SERVING_PRECOMPUTE": "0"})
    assert cfg.precompute_member_answers is False and precompute(online, ModelSet(), cfg) is None
    small = load_serving_config(env={}).model_copy(update={"precompute_max_members": 49})
    assert precompute(online, ModelSet(), small) is None
