"""Timing-specific evaluation plots (matplotlib object API, Agg canvas; logged with training.tracking.log_figures)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from training.timing.baselines import CurvePrediction


def cdf_calibration(duration: np.ndarray, event: np.ndarray, curves: Mapping[str, CurvePrediction],
                    title: str = "P(next order within d days): predicted vs observed") -> Figure:
    """Mean predicted CDF of each method against the observed share ordered within d, for d = 1..H (members whose
    status at d is known)."""
    fig = Figure(figsize=(6, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    duration = np.asarray(duration, float)
    event = np.asarray(event, bool)
    horizon = min(c.cdf.shape[1] for c in curves.values())
    days = np.arange(1, horizon + 1)
    ordered = event[:, None] & (duration[:, None] < days[None, :])
    known = ordered | (duration[:, None] >= days[None, :])
    observed = ordered.sum(axis=0) / np.maximum(known.sum(axis=0), 1)
    ax.plot(days, observed, c="black", lw=2, label="observed")
    for name, c in curves.items():
        pred = np.where(known, c.cdf[:, :horizon], 0.0).sum(axis=0) / np.maximum(known.sum(axis=0), 1)
        ax.plot(days, pred, ls="--" if name != "model" else "-", label=name)
    ax.set(xlabel="days after the cutoff", ylabel="share ordered within d", title=title, ylim=(0, 1.02))
    ax.legend(loc="lower right", fontsize=8)
    return fig
