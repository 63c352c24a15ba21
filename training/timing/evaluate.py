"""Timing metrics on one split, for the model and each baseline alike, from their CDFs on the day grid 1..H.

Every method hands over P(next order within d) for d = 1..H (`CurvePrediction`), so all metrics are computed the
same way for all of them:
- `c_index`: Harrell's concordance of the restricted mean time Σ_{d<H} S(d) with the observed (censored) times;
- `auc_14d`, `auc_30d`, `brier_14d`, `brier_30d`: "ordered within d" among members whose status at d is known;
- `ibs`: the integrated Brier score, the mean of Brier(d) over d = 1..H;
- `median_mae`: mean |predicted median − observed days| over uncensored members.
Labels censored before d (a window cut short by the data's end) are left out at d, never counted as negatives.

`concordance_bootstrap` computes the C-index for many bootstrap resamples at once: with multinomial weights w,
C = wᵀKw ÷ wᵀPw (K: concordant pairs, P: comparable pairs), a matrix product per row block, so 200 resamples of
thousands of members take seconds; the same weights serve every method (paired).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from training import metrics as M
from training.timing.baselines import CurvePrediction

METRIC_DAYS: tuple[int, ...] = (14, 30)
LOWER_IS_BETTER = frozenset({"ibs", "median_mae", *(f"brier_{d}d" for d in METRIC_DAYS)})


def restricted_mean(cdf: np.ndarray) -> np.ndarray:
    """Σ_{d=0}^{H−1} S(d) with S(0) = 1 and S(d) = 1 − cdf[:, d−1]: expected days to the next order within H."""
    return 1.0 + (1.0 - cdf[:, :-1]).sum(axis=1)


def status_at(duration: np.ndarray, event: np.ndarray, d: float) -> tuple[np.ndarray, np.ndarray]:
    """(known, ordered): whether each member's "ordered within d" is observed, and its value."""
    ordered = event & (duration < d)
    known = ordered | (duration >= d)
    return known, ordered


def brier_at(duration: np.ndarray, event: np.ndarray, p: np.ndarray, d: float) -> float:
    known, y = status_at(duration, event, d)
    return M.brier(y[known].astype(float), p[known]) if known.any() else float("nan")


def auc_at(duration: np.ndarray, event: np.ndarray, p: np.ndarray, d: float) -> float:
    known, y = status_at(duration, event, d)
    return M.auc(y[known].astype(float), p[known]) if known.any() else float("nan")


def integrated_brier(duration: np.ndarray, event: np.ndarray, cdf: np.ndarray) -> float:
    """Mean over d = 1..H of the Brier score of P(within d), each over the members whose status at d is known."""
    days = np.arange(1, cdf.shape[1] + 1, dtype="float64")
    ordered = event[:, None] & (duration[:, None] < days[None, :])
    known = ordered | (duration[:, None] >= days[None, :])
    err = np.where(known, (cdf - ordered) ** 2, 0.0)
    per_day = err.sum(axis=0) / np.maximum(known.sum(axis=0), 1)
    return float(per_day[known.any(axis=0)].mean())


def concordance_bootstrap(duration: np.ndarray, event: np.ndarray, risks: Mapping[str, np.ndarray], *,
                          n_boot: int = 0, seed: int = 0, block: int = 1024) -> dict[str, np.ndarray]:
    """Harrell's C per method (index 0) and, for n_boot > 0, its value on each paired bootstrap resample.

    Higher risk = earlier expected order. Pair (i, j) is comparable when i ordered (event) and t_i < t_j;
    concordant when risk_i > risk_j, half when tied.
    """
    t = np.asarray(duration, dtype="float64")
    ev = np.asarray(event, dtype=bool)
    n = len(t)
    rng = np.random.default_rng(seed)
    w = np.ones((n, 1 + n_boot), dtype="float64")
    if n_boot:
        w[:, 1:] = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).T
    idx = np.flatnonzero(ev)
    num = {k: np.zeros(1 + n_boot) for k in risks}
    den = np.zeros(1 + n_boot)
    for lo in range(0, len(idx), block):
        rows = idx[lo:lo + block]
        comp = (t[rows, None] < t[None, :]).astype("float64")
        den += np.einsum("ib,ib->b", w[rows], comp @ w)
        for name, r in risks.items():
            r = np.asarray(r, dtype="float64")
            diff = r[rows, None] - r[None, :]
            conc = comp * ((diff > 0) + 0.5 * (diff == 0))
            num[name] += np.einsum("ib,ib->b", w[rows], conc @ w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {k: v / den for k, v in num.items()}


def curve_metrics(duration: np.ndarray, event: np.ndarray, pred: CurvePrediction) -> dict[str, float]:
    """All point metrics of one method (C-index computed separately with the bootstrap)."""
    out: dict[str, float] = {}
    for d in METRIC_DAYS:
        if d <= pred.cdf.shape[1]:
            out[f"auc_{d}d"] = auc_at(duration, event, pred.cdf[:, d - 1], d)
            out[f"brier_{d}d"] = brier_at(duration, event, pred.cdf[:, d - 1], d)
    out["ibs"] = integrated_brier(duration, event, pred.cdf)
    obs = event & (duration < pred.cdf.shape[1])
    out["median_mae"] = float(np.mean(np.abs(pred.median_days[obs] - duration[obs]))) if obs.any() else float("nan")
    return out


def _boot_metric(fn, duration: np.ndarray, event: np.ndarray, a: np.ndarray, b: np.ndarray, d: float,  # noqa: ANN001
                 n_boot: int, seed: int, lower: bool) -> tuple[float, float]:
    known, y = status_at(duration, event, d)
    return M.paired_bootstrap_ci(fn, y[known].astype(float), a[known], b[known], n_boot=n_boot, seed=seed,
                                 lower_is_better=lower)


def compare_curves(duration: np.ndarray, event: np.ndarray, model: CurvePrediction,
                   baselines: Sequence[CurvePrediction], *, n_boot: int = 200, seed: int = 0,
                   cindex_max_members: int = 8000) -> dict[str, object]:
    """Metrics of the model and each baseline, and paired bootstrap 95% intervals of the model's gain over each
    baseline (C-index, AUC and Brier at 14/30 days, IBS, median MAE). The C-index uses at most
    `cindex_max_members` members (a seeded sample) to bound its O(n²) pair count."""
    duration = np.asarray(duration, dtype="float64")
    event = np.asarray(event, dtype=bool)
    methods = [model, *baselines]
    metrics = {m.name: curve_metrics(duration, event, m) for m in methods}
    rng = np.random.default_rng(seed)
    sample = np.arange(len(duration))
    if len(sample) > cindex_max_members:
        sample = np.sort(rng.choice(len(duration), cindex_max_members, replace=False))
    risks = {m.name: -restricted_mean(m.cdf[sample]) for m in methods}
    cidx = concordance_bootstrap(duration[sample], event[sample], risks, n_boot=n_boot, seed=seed)
    for m in methods:
        metrics[m.name] = {"c_index": float(cidx[m.name][0]), **metrics[m.name]}
    gains: dict[str, dict[str, list[float]]] = {}
    for b in baselines:
        g: dict[str, list[float]] = {}
        if n_boot:
            diff = cidx[model.name][1:] - cidx[b.name][1:]
            diff = diff[np.isfinite(diff)]
            g["c_index"] = [float(np.quantile(diff, 0.025)), float(np.quantile(diff, 0.975))]
            for d in METRIC_DAYS:
                if d > model.cdf.shape[1]:
                    continue
                pm, pb = model.cdf[:, d - 1], b.cdf[:, d - 1]
                g[f"auc_{d}d"] = list(_boot_metric(M.auc, duration, event, pm, pb, d, n_boot, seed, False))
                g[f"brier_{d}d"] = list(_boot_metric(M.brier, duration, event, pm, pb, d, n_boot, seed, True))
        gains[b.name] = g
    return {"metrics": metrics, "gain_ci95": gains,
            "cindex_members": int(len(sample)), "members": int(len(duration)),
            "events": int(event.sum()), "event_rate": float(event.mean()) if len(event) else float("nan")}
