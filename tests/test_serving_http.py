"""The online service over real HTTP: `bentoml serve` on a free loopback port against a small trained store.

One session-scoped store (benchmarks/serving_store.py, in its own process: 120 synthetic members, the four models
trained once with minimal settings into a private MLflow store, promoted to `champion`, imported into a private
BentoML home and pinned in a lock file, plus the online table), one server for the module. Every endpoint is called,
the models must come from the pinned BentoML tags (the server gets no usable registry), a lock naming tags BentoML
lacks falls back to the registry, start-up answers equal live scoring, and schemathesis fuzzes the OpenAPI
document for server errors.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.loadgen import post_json
from benchmarks.serving_store import build_trained_store
from serving.launch import RunningServer, serve
from serving.schemas import EXAMPLE_HISTORY
from tests.two_lanes import run_two_lanes

pytestmark = [pytest.mark.http, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("churn", "ltv", "timing", "recs")


@pytest.fixture(scope="session")
def served_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The trained store and the environment pointing a server at it (built once per test session)."""
    return build_trained_store(tmp_path_factory.mktemp("served"), members=120)


@pytest.fixture(scope="session")
def server(served_store: dict[str, str]) -> Iterator[RunningServer]:
    """`bentoml serve` on a free port, ready (all models + online table) or failing with its log; always stopped.

    Its registry URI points nowhere: it can only become ready by loading the pinned models from BentoML's store."""
    env = {**served_store, "MEMBER_ML_SERVING_TOKEN": "", "MLFLOW_TRACKING_URI": "sqlite:////nonexistent-registry/x.db"}
    with serve(env, ready_timeout=180) as srv:
        yield srv


@pytest.fixture(scope="session")
def member_id(served_store: dict[str, str]) -> str:
    """The member with the most orders in the online table."""
    import duckdb

    con = duckdb.connect(served_store["MEMBER_ML_ONLINE_TABLE"], read_only=True)
    try:
        return con.execute("SELECT member_id FROM features ORDER BY orders_lifetime DESC LIMIT 1").fetchone()[0]
    finally:
        con.close()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _lock(env: dict[str, str]) -> dict:
    import yaml

    return yaml.safe_load(Path(env["MEMBER_ML_SERVING_MODELS_LOCK"]).read_text())["models"]


def test_ready_health_metrics_docs(server: RunningServer) -> None:
    for path in ("/readyz", "/healthz", "/livez"):
        assert _get(server.url + path)[0] == 200, path
    assert post_json(server.url + "/echo", {"member_id": "m"}) == (200, {"member_id": "m"})
    status, text = _get(server.url + "/metrics")
    assert status == 200 and "bentoml_service_request_total" in text and 'endpoint="/echo"' in text
    status, text = _get(server.url + "/docs.json")
    paths = json.loads(text)["paths"]
    assert {"/score", "/recommend", "/quote", "/tier"} <= set(paths)


def test_score_by_member_id_uses_the_pinned_models(server: RunningServer, served_store: dict[str, str],
                                                  member_id: str) -> None:
    status, body = post_json(server.url + "/score", {"member_id": member_id, "top_n": 5})
    assert status == 200, body
    assert body["source"] == "online_table" and body["unavailable"] == {}
    pinned = _lock(served_store)
    assert body["model_versions"] == {m: pinned[m]["version"] for m in MODELS}
    assert 0 <= body["churn"]["probability"] <= 1 and body["churn"]["reasons"]
    assert body["ltv"]["value"] >= 0
    probs = list(body["next_purchase"]["probability_within_days"].values())
    assert probs and probs == sorted(probs)  # a CDF over horizons
    assert 1 <= len(body["recommendations"]) <= 5
    assert body["loyalty"]["tier"] is not None and body["loyalty"]["value_segment"] is not None


def test_score_by_inline_history(server: RunningServer) -> None:
    status, body = post_json(server.url + "/score", {"history": EXAMPLE_HISTORY, "top_n": 3})
    assert status == 200, body
    assert body["source"] == "inline_history" and body["unavailable"] == {}
    assert body["loyalty"]["tier"] == "钻石" and body["churn"] is not None and len(body["recommendations"]) == 3


def test_recommend_quote_tier(server: RunningServer, served_store: dict[str, str], member_id: str) -> None:
    import pandas as pd

    status, body = post_json(server.url + "/recommend", {"member_id": member_id, "n": 4})
    assert status == 200 and len(body["recommendations"]) == 4, body
    items = pd.read_parquet(Path(served_store["MEMBER_ML_STORE"]) / "items.parquet")
    category = dict(zip(items["item_id"].astype(str), items["category"].astype(str)))
    top_cat = category[body["recommendations"][0]["item_id"]]
    status, body2 = post_json(server.url + "/recommend", {"member_id": member_id, "n": 4,
                                                          "exclude_categories": [top_cat]})
    assert status == 200 and body2["recommendations"], body2
    assert top_cat not in {category[r["item_id"]] for r in body2["recommendations"]}
    status, body = post_json(server.url + "/recommend", {"history": EXAMPLE_HISTORY, "n": 2})
    assert status == 200 and len(body["recommendations"]) == 2, body
    status, body = post_json(server.url + "/quote", {"member_id": member_id, "cart": [{"price": 250, "quantity": 2}]})
    assert status == 200 and body["subtotal"] == 500 and body["points"] >= 0, body
    status, body = post_json(server.url + "/tier", {"history": EXAMPLE_HISTORY})
    assert status == 200 and body["loyalty"]["tier"] == "钻石", body


def test_unknown_member_and_bad_input_get_4xx(server: RunningServer) -> None:
    status, body = post_json(server.url + "/score", {"member_id": "no-such-member"})
    assert status == 404 and body["field"] == "member_id"
    bad = json.loads(json.dumps(EXAMPLE_HISTORY))
    bad["orders"].reverse()
    status, body = post_json(server.url + "/score", {"history": bad})
    assert status == 400 and "ordered_at" in json.dumps(body)
    status, body = post_json(server.url + "/score", {"member_id": 12})
    assert status == 400 and "member_id" in json.dumps(body)
    status, body = post_json(server.url + "/score", {"history": EXAMPLE_HISTORY, "pad": "x" * (2 << 20)})
    assert status == 413 and body["field"] == "body"
    req = urllib.request.Request(server.url + "/score", data=b'{"member_id": ', method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert 400 <= e.value.code < 500
    assert _get(server.url + "/livez")[0] == 200  # the worker survived all of it


def test_import_cli_is_idempotent(served_store: dict[str, str], tmp_path: Path) -> None:
    """`member-ml serve import` again: the same registry versions → the same BentoML tags, nothing re-copied."""
    lock = tmp_path / "again.lock.yaml"
    exe = Path(sys.executable).parent / "member-ml"
    r = subprocess.run([str(exe), "serve", "import", "--lock", str(lock)], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, **served_store}, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    import yaml

    again = yaml.safe_load(lock.read_text())["models"]
    assert {m: e["tag"] for m, e in again.items()} == {m: e["tag"] for m, e in _lock(served_store).items()}


@pytest.fixture(scope="module")
def inproc_scorer(served_store: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The service's Scorer built in this process, from a lock whose tags BentoML does not have: every model must
    fall back to its registry alias. MLflow's global URIs and the environment are restored afterwards."""
    import mlflow.tracking._model_registry.utils as reg_utils
    import mlflow.tracking._tracking_service.utils as trk_utils
    import yaml

    from serving.service import build_scorer

    pinned = _lock(served_store)
    ghost = {m: {**e, "tag": f"member-ml-{m}:doesnotexist"} for m, e in pinned.items()}
    lock = tmp_path_factory.mktemp("ghost") / "ghost.lock.yaml"
    lock.write_text(yaml.safe_dump({"models": ghost}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trk_utils, "_tracking_uri", trk_utils._tracking_uri)
        mp.setattr(reg_utils, "_registry_uri", reg_utils._registry_uri)
        for k in ("MLFLOW_TRACKING_URI", "MEMBER_ML_ONLINE_TABLE", "MEMBER_ML_STORE"):
            mp.setenv(k, served_store[k])
        mp.setenv("MEMBER_ML_SERVING_MODELS_LOCK", str(lock))
        yield build_scorer()


def test_registry_fallback_when_pinned_tags_are_missing(inproc_scorer: Any, served_store: dict[str, str]) -> None:
    pinned = _lock(served_store)
    ms = inproc_scorer.models
    assert ms.all_loaded and ms.sources == {m: "registry" for m in MODELS}
    assert ms.versions == {m: pinned[m]["version"] for m in MODELS}


def test_precomputed_answers_equal_live_scoring(inproc_scorer: Any) -> None:
    """/score and /recommend by member_id from the start-up answers == the same request scored live."""
    from serving.schemas import RecommendRequest, ScoreRequest

    sc = inproc_scorer
    answers = sc.answers
    assert answers is not None and not answers.failed and len(answers.index) == len(sc.online.table)
    ids = list(answers.index)[:: max(1, len(answers.index) // 12)]
    try:
        for m in ids:
            got = []
            for a in (answers, None):
                sc.answers = a
                got.append((sc.score(ScoreRequest(member_id=m, top_n=8)).model_dump(),
                            sc.recommend(RecommendRequest(member_id=m, n=5, exclude_categories=["服饰"])).model_dump()))
            (pre, pre_rec), (live, live_rec) = got
            assert pre_rec == live_rec, m
            # reason texts: the numbers' formatting may differ with the batch (see the report), the reasons may not
            for d in (pre, live):
                d["churn"]["reasons"] = [r.split(":")[0] for r in d["churn"]["reasons"]]
            assert pre == live, m
    finally:
        sc.answers = answers


def test_schemathesis_finds_no_server_error(server: RunningServer, tmp_path: Path) -> None:
    """Every operation of the OpenAPI document (examples, boundary coverage, bounded fuzzing): no 5xx, ever."""
    st = Path(sys.executable).parent / "st"
    r = subprocess.run([str(st), "run", f"{server.url}/docs.json", "--checks", "not_a_server_error",
                        "--max-examples", "12", "--seed", "7", "--request-timeout", "30", "--no-color",
                        "--generation-database", "none"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)  # its cache stays out of the repo
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def _full_histories(store: Path, as_of: str, n: int) -> list[dict[str, Any]]:
    """Inline histories carrying everything the store knows of n members (every order and event field, the profile):
    what a shop sends for a member the online table lacks. Scored inline they must give the batch answers."""
    import pandas as pd

    def v(x: Any) -> Any:
        if x is None or x is pd.NA or (isinstance(x, float) and x != x):
            return None
        if isinstance(x, pd.Timestamp):
            return x.isoformat()
        return x.item() if hasattr(x, "item") else x

    t = pd.Timestamp(as_of)
    orders = pd.read_parquet(store / "orders.parquet")
    events = pd.read_parquet(store / "events.parquet")
    members = pd.read_parquet(store / "members.parquet").set_index("member_id")
    orders, events = orders[orders["ordered_at"] < t], events[events["occurred_at"] < t]
    out = []
    for m in orders["member_id"].drop_duplicates().head(n):
        o = orders[orders["member_id"] == m].sort_values("ordered_at", kind="stable")
        e = events[events["member_id"] == m].sort_values("occurred_at", kind="stable")
        row = members.loc[m]
        profile = {k: v(row[k]) for k in ("joined_at", "gender", "age", "region", "channel", "marketing_consent")}
        profile["birthday"] = None if v(row["birthday"]) is None else pd.Timestamp(row["birthday"]).date().isoformat()
        out.append({"member_id": str(m), "as_of": t.isoformat(), "profile": profile,
                    "orders": [{k: v(r[k]) for k in ("order_id", "ordered_at", "amount", "item_id", "category",
                                                     "quantity", "discount", "coupon_used", "status")}
                               for r in o.to_dict("records")],
                    "events": [{k: v(r[k]) for k in ("occurred_at", "type", "item_id", "value")}
                               for r in e.to_dict("records")]})
    return out


def test_inline_histories_get_the_batch_answers(inproc_scorer: Any, served_store: dict[str, str]) -> None:
    """Training/serving parity end to end, through every inline fast path (pooled DuckDB engine, one loyalty replay
    reused for the features, the one-member recs summary): a member's full history sent inline gets the answers
    batch scoring gave that member (the start-up answers: loyalty, churn, LTV, next purchase); its recommendations
    equal the ones computed with the model's own `summarise_history`; and two inline requests computed at the same
    time on two threads each get the answer they get alone."""
    import dataclasses

    from serving.schemas import RecommendRequest, ScoreRequest

    sc = inproc_scorer
    hist = _full_histories(Path(served_store["MEMBER_ML_STORE"]), sc.online.as_of.isoformat(), 12)
    assert sc.history_summary().columns is not None  # the fast recs summary passed its start-up check
    alone = {}
    for h in hist:
        inline = sc.score(ScoreRequest.model_validate({"history": h, "top_n": 6})).model_dump()
        batch = sc.score(ScoreRequest(member_id=h["member_id"], top_n=6)).model_dump()
        assert inline["source"] == "inline_history" and inline["unavailable"] == {}
        for k in ("loyalty", "ltv", "next_purchase"):
            assert inline[k] == batch[k], (h["member_id"], k)
        assert inline["churn"]["probability"] == batch["churn"]["probability"], h["member_id"]
        # recs: the inline history is summarised over the online table's 365 days, with its events
        assert inline["recommendations"] == batch["recommendations"], h["member_id"]
        assert ([r.split(":")[0] for r in inline["churn"]["reasons"]]
                == [r.split(":")[0] for r in batch["churn"]["reasons"]]), h["member_id"]
        alone[h["member_id"]] = inline
    fast = sc._summary
    try:
        sc._summary = dataclasses.replace(fast, columns=None)  # the model's own summarise_history for every request
        for h in hist:
            ref = sc.score(ScoreRequest.model_validate({"history": h, "top_n": 6})).model_dump()
            assert ref["recommendations"] == alone[h["member_id"]]["recommendations"], h["member_id"]
            req = RecommendRequest.model_validate({"history": h, "n": 4, "exclude_categories": ["服饰"]})
            ref_rec = sc.recommend(req).model_dump()
            sc._summary = fast
            assert sc.recommend(req).model_dump() == ref_rec, h["member_id"]
            sc._summary = dataclasses.replace(fast, columns=None)
    finally:
        sc._summary = fast

    got = run_two_lanes(lambda k: [sc.score(ScoreRequest.model_validate({"history": h, "top_n": 6})).model_dump()
                                   for h in hist[k::2]], timeout_s=300)
    for k in (0, 1):
        assert [g["member_id"] for g in got[k]] == [h["member_id"] for h in hist[k::2]]
        for g in got[k]:
            assert g == alone[g["member_id"]], g["member_id"]
