"""A built campaign on disk: one Parquet file per audience, `summary.parquet` + `summary.csv`, `campaign.json`.

The folder is written to a temporary name beside `out` and renamed when complete (no partial campaign).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from features.contract import MEMBER_ID
from serving.campaigns.audiences import Campaign

META = "campaign.json"
SUMMARY = "summary"


class CampaignFilesError(ValueError):
    """A campaign folder is missing or incomplete."""


def write_campaign(c: Campaign, out: Path, *, config: dict[str, Any], scores_manifest: dict[str, Any] | None) -> Path:
    """Write the campaign folder atomically; returns `out`."""
    import shutil

    from serving.batch import replace_dir

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        files = {}
        for name in c.summary["audience"] if len(c.summary) else []:
            rows = c.audience(name)
            rows.to_parquet(tmp / f"{name}.parquet", index=False)
            files[name] = f"{name}.parquet"
        c.summary.to_parquet(tmp / f"{SUMMARY}.parquet", index=False)
        c.summary.to_csv(tmp / f"{SUMMARY}.csv", index=False)
        meta = {**c.meta, "audiences": files, "config": config,
                "scores": {k: scores_manifest.get(k) for k in ("as_of", "members", "models", "source")}
                if scores_manifest else None}
        (tmp / META).write_text(json.dumps(meta, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_campaign(folder: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(every audience's rows in one frame, the campaign metadata)."""
    folder = Path(folder)
    mpath = folder / META
    if not mpath.exists():
        raise CampaignFilesError(f"{folder} is not a campaign folder (no {META}; build one with "
                                 "`member-ml campaign build`)")
    meta = json.loads(mpath.read_text(encoding="utf-8"))
    frames = []
    for name, file in meta["audiences"].items():
        p = folder / file
        if not p.exists():
            raise CampaignFilesError(f"campaign {folder}: audience file {file} is missing")
        frames.append(pd.read_parquet(p))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({MEMBER_ID: pd.Series([], dtype="string")})
    rows[MEMBER_ID] = rows[MEMBER_ID].astype("string")
    return rows, meta
