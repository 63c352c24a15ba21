"""The online scoring service (DESIGN §7): one member in milliseconds, with tier, points, benefits and predictions.

`bentoml serve` (see bentofile.yaml / `make serve`) loads this module; the service instance is built once per worker:
it reads the serving config (serving/serving.yaml + environment), loads every `champion` model once
(serving/models.py), opens the online feature table and the loyalty rules, and answers:

- POST /score      member_id (online features) or an inline history (features computed by the batch definitions)
- POST /recommend  top-N items with reasons, optional excluded categories
- POST /quote      a cart → price after the tier discount and the points it earns
- POST /tier       loyalty rules only, from a history
- POST /echo       the latency floor of this same service (benchmarks)
- GET /healthz /livez, /readyz (ready only when every configured model is loaded and the online feature table is
  open: a load balancer never routes to a worker that would answer /score by member_id with 503), /metrics

Errors: invalid input → 400 naming the field (BentoML's pydantic validation, or ours: `{"error", "field"}`); unknown
member → 404; too large → 413; missing/invalid token → 401. A deployment-state gap (the online table or a model
missing) answers 503 with a message saying what is missing; /readyz is 503 in that state too.

Models: pinned BentoML tags from `member-ml serve import` when present (serving/import_models.py; `bentoml build`
packs them, see `_declare_pinned_models`), else the registry's champion aliases (serving/models.py).

Latency settings (what each bought: benchmarks/results/serving.json, notes.ablation): BentoML's access log is off
(it also logs client addresses; serving/middleware.py logs without personal data), tracing is excluded for every path
(set `tracing.excluded_urls` through BENTOML_CONFIG_OVERRIDES together with an exporter to trace), the request timeout
is 10 s and its per-request timer is cancelled (serving/runtime.py), and the start-up heap is frozen out of GC.
The hot path: every online-table member is scored once at start-up by the batch functions (serving/precompute.py),
so /score by member_id is a lookup; LightGBM runs single-threaded; inline histories run in at most
`inline_concurrency` threads off the event loop.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import bentoml
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from serving.config import ServingConfig, load_serving_config
from serving.import_models import PinnedModel
from serving.middleware import (BearerAuthMiddleware, BodyLimitMiddleware, JsonOnlyMiddleware,
                                RequestLogMiddleware)
from serving.runtime import (fix_timeout_timer_leak, freeze_startup_heap, quiet_validation_logs,
                             single_thread_native)
from serving.schemas import (QuoteRequest, QuoteResponse, RecommendRequest, RecommendResponse, ScoreRequest,
                             ScoreResponse, TierRequest, TierResponse)
from serving.scoring import RequestError, Scorer

log = logging.getLogger("member_ml.serving")

SERVICE_NAME = "member_scoring"


class EchoResponse(BaseModel):
    member_id: str


def pinned_models(cfg: ServingConfig) -> dict[str, PinnedModel] | None:
    """The lock file's pinned models (None when there is none; a malformed lock is logged and ignored)."""
    from serving.import_models import LockError, read_lock

    path = cfg.resolve(cfg.models_lock)
    if path is None:
        return None
    try:
        return read_lock(path)
    except LockError as e:
        log.warning("%s: resolving the registry aliases instead", e)
        return None


def tracking_uri(cfg: ServingConfig) -> str:
    """MLFLOW_TRACKING_URI (or the config's), else the project's own store under mlflow/ as the CLI uses it."""
    from member_ml.settings import Settings

    return cfg.tracking_uri or Settings(root=cfg.root).resolved_tracking_uri()


def build_scorer() -> Scorer:
    """Load everything a worker needs, once: config, loyalty rules, champion models, online lookup, item catalogue."""
    from loyalty.config import load_config

    from serving.models import load_models
    from serving.online import open_lookup

    cfg = load_serving_config()
    loyalty_cfg = load_config(cfg.resolve(cfg.loyalty_config)) if cfg.loyalty_config else load_config()
    models = load_models(cfg.models, cfg.alias, tracking_uri(cfg), pinned_models(cfg))
    online, online_error = None, None
    table = cfg.resolve(cfg.online_table)
    store = cfg.resolve(cfg.store)
    if table is not None and table.exists():
        try:
            online = open_lookup(table, store, loyalty_cfg)
        except Exception as e:  # a broken table must not stop the inline-history endpoints
            log.exception("online table %s could not be opened", table)
            online_error = f"online table {table} could not be opened: {type(e).__name__}: {e}"
    else:
        online_error = f"online feature table {table} does not exist (build it with `member-ml online build`)"
        log.warning(online_error)
    items = None
    if store is not None and (store / "items.parquet").exists():
        from features.store import Store

        items = Store(store).read_optional("items")
    scorer = Scorer(cfg, loyalty_cfg, models, online, online_error, items)
    if online is not None:
        from serving.precompute import precompute

        scorer.answers = precompute(online, models, cfg)
    return scorer


def is_ready(scorer: Scorer) -> bool:
    """Every configured model loaded, and the online table open unless none is configured."""
    online_ok = scorer.online is not None or scorer.config.online_table is None
    return scorer.models.all_loaded and online_ok


def _error(e: RequestError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


@bentoml.service(
    name=SERVICE_NAME,
    workers=1,
    traffic={"timeout": 10},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ["/"]},
)
class MemberScoring:
    """Member intelligence online: loyalty rules + champion models, one endpoint per question."""

    def __init__(self) -> None:
        t0 = time.perf_counter()
        quiet_validation_logs()
        self._inline_limiter: Any = None
        if "single_thread_native" in load_serving_config().runtime_fixes:
            single_thread_native()  # before any model (LightGBM) is loaded
        self.scorer = build_scorer()
        cfg = self.scorer.config
        self.timer_fix = "timer_leak" in cfg.runtime_fixes and fix_timeout_timer_leak()
        if "freeze_heap" in cfg.runtime_fixes:
            freeze_startup_heap()
        log.info("member_scoring started in %.1f s: models %s from %s, unavailable %s, online table %s",
                 time.perf_counter() - t0, self.scorer.models.versions, self.scorer.models.sources,
                 sorted(self.scorer.models.unavailable), "open" if self.scorer.online else self.scorer.online_error)

    def __is_ready__(self) -> bool:
        """Ready only when every configured model is loaded and the configured online table is open (rules-only
        endpoints answer before that; /score by member_id would answer 503)."""
        return is_ready(self.scorer)

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        """Inline histories run DuckDB and pandas off the event loop, so id lookups keep flowing; at most
        `inline_concurrency` at once (more threads only thrash the cores and push every one toward the timeout)."""
        import anyio
        import anyio.to_thread

        if self._inline_limiter is None:
            self._inline_limiter = anyio.CapacityLimiter(self.scorer.config.inline_concurrency)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._inline_limiter)

    @bentoml.api(route="/score", input_spec=ScoreRequest)
    async def score(self, **req: Any) -> ScoreResponse:
        """Tier, points, benefits, segments, churn with reasons, LTV, next purchase and recommendations for one
        member, by member_id (online features) or by inline history; with the model versions used."""
        r = ScoreRequest.model_construct(**req)
        try:
            if r.history is not None:
                return await self._in_thread(self.scorer.score, r)
            return self.scorer.score(r)
        except RequestError as e:
            return _error(e)

    @bentoml.api(route="/recommend", input_spec=RecommendRequest)
    async def recommend(self, **req: Any) -> RecommendResponse:
        """Top-N items for a member (by id or inline history) with a reason each; categories can be excluded."""
        r = RecommendRequest.model_construct(**req)
        try:
            if r.history is not None:
                return await self._in_thread(self.scorer.recommend, r)
            return self.scorer.recommend(r)
        except RequestError as e:
            return _error(e)

    @bentoml.api(route="/quote", input_spec=QuoteRequest)
    async def quote(self, **req: Any) -> QuoteResponse:
        """Price a cart after the member's tier discount and the points it will earn (rules only)."""
        r = QuoteRequest.model_construct(**req)
        try:
            if r.history is not None:
                return await self._in_thread(self.scorer.quote, r)
            return self.scorer.quote(r)
        except RequestError as e:
            return _error(e)

    @bentoml.api(route="/tier", input_spec=TierRequest)
    async def tier(self, **req: Any) -> TierResponse:
        """Tier, next tier and spend still needed, benefits, points and segments from a history (rules only)."""
        r = TierRequest.model_construct(**req)
        try:
            return await self._in_thread(self.scorer.tier, r)
        except RequestError as e:
            return _error(e)

    @bentoml.api(route="/echo")
    async def echo(self, member_id: str = Field(min_length=1, max_length=128)) -> EchoResponse:
        """Return the member_id unchanged: the floor of this service's latency (parsing, routing, middlewares)."""
        return EchoResponse(member_id=member_id)


class EdgeMiddleware:
    """Our request edge, built from the serving config when the worker's app starts (not at import):
    request log (no personal data) → bearer token (when configured) → body-size limit → JSON bodies only →
    BentoML's handlers."""

    def __init__(self, app: Any) -> None:
        cfg = load_serving_config()
        inner = BodyLimitMiddleware(JsonOnlyMiddleware(app), max_bytes=cfg.max_body_bytes)
        if cfg.token:
            inner = BearerAuthMiddleware(inner, token=cfg.token)
        self.app = RequestLogMiddleware(inner)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def _declare_pinned_models(svc: Any) -> None:
    """Declare the lock's pinned tags as the service's models, so `bentoml build` packs them into the Bento.

    BentoML learns a service's models when its module is imported (the `BentoModel(tag)` class-attribute idiom);
    the tags are only known from the lock, so they are added here. Only tags present in the model store are
    declared: a stale lock must not stop `bentoml serve` (the registry fallback covers it).
    """
    try:
        pins = pinned_models(load_serving_config()) or {}
    except Exception as e:  # noqa: BLE001 - a bad config is reported (with its field) when the worker starts
        log.debug("no pinned models declared: %s", e)
        return
    if not pins:
        return
    import bentoml
    from bentoml.exceptions import NotFound
    from bentoml.models import BentoModel

    for pin in pins.values():
        try:
            bentoml.models.get(pin.tag)
        except NotFound:
            log.warning("pinned model %s is not in BentoML's model store: not declared", pin.tag)
            continue
        svc.models.append(BentoModel(pin.tag))


MemberScoring.add_asgi_middleware(EdgeMiddleware)
_declare_pinned_models(MemberScoring)
