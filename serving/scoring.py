"""What the endpoints compute, without BentoML: validated requests in, response models out.

`Scorer` holds what a worker loads once (serving config, loyalty rules, champion models, the online lookup, the
store's item catalogue) and answers /score, /recommend, /quote and /tier. Client mistakes raise `RequestError`
(→ 4xx with the field named); a model that fails for one member is reported under `unavailable`, never as a 5xx.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from features.contract import EVENTS, MEMBER_ID, MEMBERS, ORDERS, conform
from features.engine import EnginePool
from serving.compose import (churn_answer, churn_columns, ltv_answer, ltv_columns, next_purchase_answer,
                             recommend_frame, recommendation_answers, timing_columns)
from serving.config import ServingConfig
from serving.models import ModelSet
from serving.online import OnlineLookup
from serving.schemas import (Benefits, History, Loyalty, QuoteRequest, QuoteResponse, Recommendation,
                             RecommendRequest, RecommendResponse, ScoreRequest, ScoreResponse, TierRequest,
                             TierResponse)

log = logging.getLogger("member_ml.serving.scoring")


class RequestError(Exception):
    """A request that cannot be answered as asked: HTTP status, message, and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "field": self.field}


def _num(v: Any) -> float | None:
    if v is None or v is pd.NA:
        return None
    f = float(v)
    return None if math.isnan(f) else f


def _int(v: Any) -> int | None:
    f = _num(v)
    return None if f is None else int(f)


# ------------------------------------------------------------------------------------------- inline histories

def history_tables(h: History, items: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """An inline history as contract tables (orders, events, members, and the store's items when known)."""
    orders = pd.DataFrame([o.model_dump() for o in h.orders]) if h.orders else pd.DataFrame(columns=ORDERS.names)
    orders[MEMBER_ID] = h.member_id
    events = pd.DataFrame([e.model_dump() for e in h.events]) if h.events else pd.DataFrame(columns=EVENTS.names)
    events[MEMBER_ID] = h.member_id
    prof = h.profile.model_dump() if h.profile else {}
    if prof.get("birthday") is not None:
        prof["birthday"] = dt.datetime.combine(prof["birthday"], dt.time())
    members = pd.DataFrame([{MEMBER_ID: h.member_id, **prof}])
    tables = {"orders": conform(orders, ORDERS), "events": conform(events, EVENTS), "members": conform(members, MEMBERS)}
    if items is not None:
        tables["items"] = items
    return tables


def _state_to_loyalty(s: dict[str, Any]) -> Loyalty:
    has_benefits = s.get("discount_rate") is not None
    return Loyalty(
        tier=s.get("tier"), tier_rank=_int(s.get("tier_rank")), next_tier=s.get("next_tier"),
        spend_to_next_tier=_num(s.get("spend_to_next_tier")),
        benefits=Benefits(
            discount_rate=float(s["discount_rate"]), points_multiplier=float(s.get("points_multiplier") or 1.0),
            priority_shipping=bool(s.get("priority_shipping")), dedicated_service=bool(s.get("dedicated_service")),
            birthday_gift=bool(s.get("birthday_gift")), member_day=bool(s.get("member_day")),
        ) if has_benefits else None,
        points_balance=_int(s.get("points_balance")), points_expiring_30d=_int(s.get("points_expiring_30d")),
        value_segment=s.get("value_segment"), lifecycle_segment=s.get("lifecycle_segment"),
        strategy=s.get("strategy"),
    )


@dataclass
class Scorer:
    """Everything a worker loads once, and the computation behind each endpoint."""

    config: ServingConfig
    loyalty_config: Any
    models: ModelSet
    online: OnlineLookup | None = None
    online_error: str | None = None
    items: pd.DataFrame | None = None
    answers: Any = None  # serving.precompute.MemberAnswers: every online member scored once at start-up
    _item_category: dict[str, str] | None = field(default=None, repr=False)
    # DuckDB engines for inline histories, made once and reused (the item catalogue stays loaded in each)
    engines: EnginePool = field(init=False, repr=False)
    # the recs model's summarise_history for one inline history (serving.recs_history: checked equal at load)
    _summary: Any = field(default=None, init=False, repr=False)
    # whether the serving rules are the ones the loyalty features are computed with (loyalty.config.load_config()):
    # then an inline history's loyalty state is replayed once and reused for its features
    _feature_rules: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        from loyalty.config import load_config

        self.engines = EnginePool({"items": self.items} if self.items is not None else None,
                                  max_idle=max(2, self.config.inline_concurrency))
        self._feature_rules = self.loyalty_config == load_config()
        self.history_summary()  # the start-up check of the fast path, before the first request

    def history_summary(self) -> Any:
        """The recs model's `summarise_history` over the last RECENT_ITEMS_DAYS before as_of (the batch / online
        window) as a `serving.recs_history.FastSummary` (None without one)."""
        m = self.models.get("recs") if self.models is not None else None
        ref = getattr(getattr(m, "module", None), "summarise_history", None)
        if ref is None:
            return None
        if self._summary is None or self._summary.reference is not ref:
            from features.definitions.recent_items import RECENT_ITEMS_DAYS
            from serving.recs_history import FastSummary

            # the window of the online recent_items table and of the ranker's training summary
            self._summary = FastSummary.for_model(ref, window_days=RECENT_ITEMS_DAYS)
        return self._summary

    # -------------------------------------------------------------------------------------------- loyalty
    def member_state(self, h: History, tables: dict[str, pd.DataFrame] | None = None) -> Any:
        """loyalty.member.member_state over the inline history (400 when the rules reject it)."""
        from loyalty.frames import LoyaltyInputError
        from loyalty.member import member_state

        t = h.scoring_time()
        tables = tables if tables is not None else history_tables(h)
        try:
            return member_state(tables["orders"], tables["events"], tables["members"], t, self.loyalty_config,
                                member_id=h.member_id)
        except LookupError as e:
            raise RequestError(422, f"history: {e}", "history") from e
        except LoyaltyInputError as e:
            raise RequestError(400, f"history: {e}", "history") from e

    def loyalty_online(self, member_id: str, feats: pd.DataFrame) -> Loyalty:
        state = self.online.loyalty(member_id) if self.online else None
        if state is not None:
            return _state_to_loyalty(state)
        # no store at start-up: what the feature table knows (tier rank, balance, gap), named by the rules
        row = feats.iloc[0]
        rank = _int(row.get("tier_rank"))
        tiers = self.loyalty_config.ladder.tiers
        tier = tiers[rank] if rank is not None and 0 <= rank < len(tiers) else None
        nxt = tiers[rank + 1].name if rank is not None and rank + 1 < len(tiers) else None
        b = tier.benefits if tier else None
        return Loyalty(tier=tier.name if tier else None, tier_rank=rank, next_tier=nxt,
                       spend_to_next_tier=_num(row.get("spend_to_next_tier")),
                       benefits=Benefits(**b.model_dump(include=set(Benefits.model_fields))) if b else None,
                       points_balance=_int(row.get("points_balance")), points_expiring_30d=None,
                       value_segment=None, lifecycle_segment=None)

    # ------------------------------------------------------------------------------------------- features
    def online_features(self, member_id: str) -> pd.DataFrame:
        if self.online is None:
            raise RequestError(503, f"member_id lookups are unavailable: {self.online_error}", "member_id")
        feats = self.online.features(member_id)
        if feats is None:
            raise RequestError(404, f"member {member_id!r} is not in the online feature table (as of "
                               f"{self.online.as_of.date()}); send the history inline instead", "member_id")
        return feats

    def inline_features(self, h: History, tables: dict[str, pd.DataFrame] | None = None,
                        state: Any = None) -> pd.DataFrame:
        """The batch definitions (features.pipeline.compute_features) over the member's own rows. `state` (this
        history's `member_state`) supplies the loyalty features when the serving rules are the features' rules."""
        from features.pipeline import LOYALTY_FEATURES, compute_inline_features

        tables = tables if tables is not None else history_tables(h, self.items)
        loyalty = None
        if state is not None and self._feature_rules:
            loyalty = pd.DataFrame({"member_id": [state.member_id],
                                    **{c: [getattr(state, c)] for c in LOYALTY_FEATURES}})
        with self.engines.engine() as eng:
            feats = compute_inline_features(tables, pd.Timestamp(h.scoring_time()), engine=eng, loyalty=loyalty)
        feats = feats.loc[feats[MEMBER_ID] == h.member_id].reset_index(drop=True)
        if len(feats) == 0:
            raise RequestError(422, "history: no order, event or registration before as_of", "history")
        if self.online is not None:  # columns the table has but this history cannot produce: unknown (null)
            for c in self.online.table.feature_names:
                if c not in feats.columns:
                    feats[c] = float("nan")
        return feats

    # ----------------------------------------------------------------------------------------------- models
    def predictions(self, feats: pd.DataFrame, as_of: pd.Timestamp,
                    member_id: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
        """churn, ltv and next_purchase for a one-row feature frame; a failing model goes to `unavailable`.
        With `member_id` (an online-table member), the start-up answers are used where they exist."""
        out: dict[str, Any] = {"churn": None, "ltv": None, "next_purchase": None}
        unavailable: dict[str, str] = {}
        pos = self.answers.position(member_id) if self.answers is not None and member_id is not None else None
        for name in ("churn", "ltv", "timing"):
            if name not in self.config.models:
                continue
            m = self.models.get(name)
            if m is None:
                unavailable[name] = self.models.unavailable.get(name, "not loaded")
                continue
            if pos is not None and name in self.answers.columns:
                key = "next_purchase" if name == "timing" else name
                out[key] = getattr(self.answers, f"{key}_answer")(pos)
                continue
            try:
                if name == "churn":
                    row = churn_columns(m.python_model, feats, self.config.top_reasons).iloc[0]
                elif name == "ltv":
                    row = ltv_columns(m.python_model, feats).iloc[0]
                else:
                    row = timing_columns(m.python_model, feats, as_of).iloc[0]
            except Exception as e:  # one model failing must not take the whole answer down
                log.exception("model %s failed", name)
                unavailable[name] = f"{name} v{m.version} failed for this member: {type(e).__name__}"
                continue
            if name == "churn":
                out["churn"] = churn_answer(row)
            elif name == "ltv":
                out["ltv"] = ltv_answer(row)
            else:
                out["next_purchase"] = next_purchase_answer(row)
        return out, unavailable

    def _categories(self) -> dict[str, str]:
        """item_id → category, from the recs model's catalogue (for excluded categories)."""
        if self._item_category is None:
            m = self.models.get("recs")
            art = getattr(m.python_model, "art", None) if m else None
            mapping: dict[str, str] = {}
            if art is not None and len(getattr(art, "categories", ())):
                cats = art.categories
                for iid, ci in zip(art.item_ids.tolist(), art.item_category.tolist()):
                    if ci >= 0:
                        mapping[str(iid)] = str(cats[ci])
            elif self.items is not None and "category" in self.items.columns:
                mapping = dict(zip(self.items["item_id"].astype(str), self.items["category"].astype(str)))
            self._item_category = mapping
        return self._item_category

    def recommendations(self, member_id: str, history: History | None, n: int, exclude: list[str],
                        as_of: pd.Timestamp, tables: dict[str, pd.DataFrame] | None = None) -> list[Recommendation]:
        """Top-n items from the recs champion (raises RequestError 503 when it is not loaded)."""
        m = self.models.get("recs")
        if m is None:
            raise RequestError(503, f"recommendations are unavailable: "
                               f"{self.models.unavailable.get('recs', 'recs model not configured')}", None)
        pos = self.answers.position(member_id) if self.answers is not None and history is None else None
        if pos is not None:
            pre = self.answers.recommendations(pos, n, set(exclude), self._categories() if exclude else None)
            if pre is not None:
                return pre
        if history is not None:
            summarise = self.history_summary()
            tables = tables if tables is not None else history_tables(history)
            hist = summarise(tables["orders"], tables["events"], as_of) if summarise else pd.DataFrame()
        else:
            hist = self.online.recent_items(member_id) if self.online else pd.DataFrame()
        want = n + (200 if exclude else 0)
        res = recommend_frame(m.python_model, hist, [member_id], want, as_of)
        res = res.loc[res[MEMBER_ID] == member_id]
        if exclude:
            cats = self._categories()
            bad = set(exclude)
            res = res.loc[[cats.get(str(i)) not in bad for i in res["item_id"]]]
        return recommendation_answers(res, n)

    # ---------------------------------------------------------------------------------------------- endpoints
    def score(self, req: ScoreRequest) -> ScoreResponse:
        if req.history is not None:
            h = req.history
            member_id, as_of = h.member_id, pd.Timestamp(h.scoring_time())
            tables = history_tables(h, self.items)  # conformed once, used by loyalty, features and recs
            state = self.member_state(h, tables)
            loyalty = _state_to_loyalty(state.model_dump())
            feats = self.inline_features(h, tables, state)
            source = "inline_history"
        else:
            member_id = req.member_id
            feats = self.online_features(member_id)
            as_of = self.online.as_of
            loyalty = self.loyalty_online(member_id, feats)
            source = "online_table"
            tables = None
        preds, unavailable = self.predictions(feats, as_of, member_id if req.history is None else None)
        recs = None
        if "recs" in self.config.models:
            try:
                recs = self.recommendations(member_id, req.history, req.top_n, [], as_of, tables)
            except RequestError as e:
                unavailable["recs"] = e.message
            except Exception as e:
                log.exception("recs failed")
                unavailable["recs"] = f"recs failed for this member: {type(e).__name__}"
        used = {k: v for k, v in self.models.versions.items() if k not in unavailable}
        return ScoreResponse(member_id=member_id, as_of=as_of.to_pydatetime(), source=source, loyalty=loyalty,
                             recommendations=recs, model_versions=used, unavailable=unavailable, **preds)

    def recommend(self, req: RecommendRequest) -> RecommendResponse:
        if req.history is not None:
            member_id, as_of = req.history.member_id, pd.Timestamp(req.history.scoring_time())
        else:
            member_id = req.member_id
            self.online_features(member_id)  # 404 for an unknown member
            as_of = self.online.as_of
        recs = self.recommendations(member_id, req.history, req.n, req.exclude_categories, as_of)
        return RecommendResponse(member_id=member_id, as_of=as_of.to_pydatetime(), recommendations=recs,
                                 model_version=self.models.get("recs").version)

    def tier(self, req: TierRequest) -> TierResponse:
        h = req.history
        state = self.member_state(h)
        return TierResponse(member_id=h.member_id, as_of=h.scoring_time(), loyalty=_state_to_loyalty(state.model_dump()))

    def quote(self, req: QuoteRequest) -> QuoteResponse:
        from loyalty.member import MemberState
        from loyalty.quote import Cart, CartLine, quote

        if req.history is not None:
            member_id = req.history.member_id
            state = self.member_state(req.history)
        else:
            member_id = req.member_id
            feats = self.online_features(member_id)
            s = self.online.loyalty(member_id) if self.online else None
            if s is None:
                lv = self.loyalty_online(member_id, feats)
                s = {"tier": lv.tier, "tier_rank": lv.tier_rank}
            state = MemberState.model_construct(**{**{k: None for k in MemberState.model_fields}, **s,
                                                   "as_of": self.online.as_of.to_pydatetime(),
                                                   "birth_month": s.get("birth_month")})
        at = req.at or dt.datetime.now(dt.UTC).replace(tzinfo=None)
        cart = Cart(lines=[CartLine(**ln.model_dump()) for ln in req.cart], at=at)
        q = quote(cart, state, self.loyalty_config)
        return QuoteResponse(member_id=member_id, **q.model_dump())
