"""Evaluation plots as matplotlib Figures (object API, Agg canvas: no pyplot state, no display needed).

Each function takes data and returns a Figure; `training.tracking.log_figures` logs them. Curves accept several
named score arrays so a model and its baselines share one chart.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from training import metrics as M


def _figure(w: float = 5.5, h: float = 4.5) -> tuple[Figure, object]:
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _roc_points(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], (y[order] > 0.5).astype(float)
    last = np.r_[np.flatnonzero(np.diff(ps) != 0), len(ps) - 1]
    tp, fp = np.cumsum(ys)[last], np.cumsum(1 - ys)[last]
    return np.r_[0, fp / max(fp[-1], 1)], np.r_[0, tp / max(tp[-1], 1)]


def roc(y: Sequence[float], scores: Mapping[str, Sequence[float]], title: str = "ROC") -> Figure:
    fig, ax = _figure()
    y = np.asarray(y, float)
    for name, p in scores.items():
        fpr, tpr = _roc_points(y, np.asarray(p, float))
        ax.plot(fpr, tpr, label=f"{name} (AUC {M.auc(y, p):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def precision_recall(y: Sequence[float], scores: Mapping[str, Sequence[float]], title: str = "Precision-recall") -> Figure:
    fig, ax = _figure()
    y = np.asarray(y, float)
    for name, p in scores.items():
        p = np.asarray(p, float)
        order = np.argsort(-p, kind="mergesort")
        tp = np.cumsum(y[order] > 0.5)
        n = np.arange(1, len(p) + 1)
        ax.plot(tp / max(tp[-1], 1), tp / n, label=f"{name} (AP {M.pr_auc(y, p):.3f})")
    ax.axhline(float(np.mean(y > 0.5)), ls=":", c="grey")
    ax.set(xlabel="recall", ylabel="precision", title=title, ylim=(0, 1.02))
    ax.legend(loc="upper right", fontsize=8)
    return fig


def calibration(y: Sequence[float], probs: Mapping[str, Sequence[float]], n_bins: int = 10,
                title: str = "Calibration") -> Figure:
    """Reliability diagram: mean predicted vs observed rate in equal-count bins."""
    fig, ax = _figure()
    y = np.asarray(y, float)
    for name, p in probs.items():
        t = M.decile_table(y, np.asarray(p, float), n_bins)
        ax.plot(t["predicted"], t["actual"], marker="o", label=name)
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title=title)
    ax.legend(loc="upper left", fontsize=8)
    return fig


def gain(y: Sequence[float], scores: Mapping[str, Sequence[float]], title: str = "Cumulative gain") -> Figure:
    """Share of all events (or value) captured vs share of members targeted, best-scored first."""
    fig, ax = _figure()
    y = np.asarray(y, float)
    for name, p in scores.items():
        order = np.argsort(-np.asarray(p, float), kind="mergesort")
        cum = np.r_[0, np.cumsum(y[order])] / max(y.sum(), 1e-12)
        ax.plot(np.linspace(0, 1, len(cum)), cum, label=name)
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="share of members targeted", ylabel="share captured", title=title)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def lift(y: Sequence[float], scores: Mapping[str, Sequence[float]], title: str = "Lift by decile") -> Figure:
    """Event rate (or mean value) per score decile ÷ overall rate."""
    fig, ax = _figure()
    y = np.asarray(y, float)
    width = 0.8 / max(len(scores), 1)
    for i, (name, p) in enumerate(scores.items()):
        t = M.decile_table(y, np.asarray(p, float))
        ax.bar(t["decile"] + (i - (len(scores) - 1) / 2) * width, t["actual"] / max(y.mean(), 1e-12), width=width,
               label=name)
    ax.axhline(1.0, ls=":", c="grey")
    ax.set(xlabel="decile (1 = highest score)", ylabel="lift", title=title, xticks=range(1, 11))
    ax.legend(fontsize=8)
    return fig


def value_deciles(y: Sequence[float], pred: Sequence[float], title: str = "LTV by predicted decile") -> Figure:
    """Mean predicted vs mean actual value per predicted-value decile."""
    fig, ax = _figure()
    t = M.decile_table(np.asarray(y, float), np.asarray(pred, float))
    ax.bar(t["decile"] - 0.2, t["predicted"], width=0.4, label="predicted")
    ax.bar(t["decile"] + 0.2, t["actual"], width=0.4, label="actual")
    ax.set(xlabel="decile (1 = highest predicted)", ylabel="mean value", title=title, xticks=range(1, 11))
    ax.legend(fontsize=8)
    return fig


def feature_importance(importance: pd.Series, top: int = 20, title: str = "Feature importance (gain)") -> Figure:
    """Horizontal bars of the `top` largest importances (a Series indexed by feature name)."""
    s = importance.sort_values(ascending=False).head(top)[::-1]
    fig, ax = _figure(6.5, max(3.0, 0.28 * len(s) + 1))
    ax.barh(list(s.index.astype(str)), s.to_numpy())
    ax.set(xlabel="total gain", title=title)
    fig.tight_layout()
    return fig


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    """PNG bytes of a figure (for notebooks: `display(Image(to_png(fig)))` works under any matplotlib backend)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()
