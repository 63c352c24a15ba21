"""Log a `training.member_pyfunc` model to MLflow as a self-contained pyfunc ("models from code").

The logged model holds: a short entry script that builds the PythonModel, the whole `member_pyfunc` package
(as `code/member_pyfunc`, via `code_paths`), and the model's artifacts (LightGBM text files, JSON). Loading it needs
numpy/pandas/lightgbm/mlflow only, never `training`. Any model type plugs in by adding its module to
`training/member_pyfunc/` and calling `log_pyfunc_model(entry="member_pyfunc.<module>:<Class>", ...)`.
"""
from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

PACKAGE_DIR = Path(__file__).resolve().parent / "member_pyfunc"
PACKAGE = "member_pyfunc"
_ENTRY = re.compile(r"^member_pyfunc\.(?P<module>[A-Za-z_][A-Za-z0-9_]*):(?P<cls>[A-Za-z_][A-Za-z0-9_]*)$")

ENTRY_SCRIPT = '''"""Entry point of a member-ml pyfunc model (generated): builds {cls} from the bundled member_pyfunc package.

MLflow puts this model's code folder first on sys.path just before it runs this file. A `member_pyfunc` package
imported earlier in the process (by another model, perhaps logged at another commit) is forgotten first, so every
model runs the copy it was logged with; models loaded before keep theirs.
"""
import sys

import mlflow.models

for _name in [k for k in sys.modules if k == "member_pyfunc" or k.startswith("member_pyfunc.")]:
    del sys.modules[_name]

from member_pyfunc.{module} import {cls}  # noqa: E402

mlflow.models.set_model({cls}())
'''


def log_pyfunc_model(*, entry: str, artifacts: dict[str, str], input_example: pd.DataFrame,
                     output_example: pd.DataFrame | None = None, registered_model_name: str | None = None,
                     name: str = "model", params: dict[str, Any] | None = None,
                     pip_requirements: list[str] | None = None) -> Any:
    """Log the model under the active run (and register it when `registered_model_name` is given).

    `entry` is "member_pyfunc.<module>:<Class>"; `input_example` is a small feature frame (also used for the
    signature with `output_example`, the model's output on it). Returns MLflow's ModelInfo (has
    `registered_model_version` when registered).
    """
    import mlflow
    from mlflow.models import infer_signature

    m = _ENTRY.match(entry)
    if not m:
        raise ValueError(f"entry {entry!r} must look like 'member_pyfunc.<module>:<Class>'")
    if not (PACKAGE_DIR / f"{m['module']}.py").exists():
        raise ValueError(f"entry {entry!r}: no module {m['module']}.py in {PACKAGE_DIR}")
    example = _json_safe(input_example)
    signature = infer_signature(example, _json_safe(output_example) if output_example is not None else None,
                                params=params)
    with tempfile.TemporaryDirectory(prefix="member_pyfunc_") as tmp:
        tmp_path = Path(tmp)
        shutil.copytree(PACKAGE_DIR, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
        script = tmp_path / f"{m['module']}_entry.py"
        script.write_text(ENTRY_SCRIPT.format(module=m["module"], cls=m["cls"]), encoding="utf-8")
        # MLflow executes the entry script while saving: make the bundled package importable for that moment.
        sys.path.insert(0, tmp)
        try:
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=str(script),
                artifacts=artifacts,
                code_paths=[str(tmp_path / PACKAGE)],
                signature=signature,
                input_example=example,
                registered_model_name=registered_model_name,
                pip_requirements=pip_requirements or _requirements(),
            )
        finally:
            sys.path.remove(tmp)
            _forget_package()


def _forget_package() -> None:
    """Drop the temporary top-level `member_pyfunc` modules so a later load uses the model's own copy."""
    for key in [k for k in sys.modules if k == PACKAGE or k.startswith(PACKAGE + ".")]:
        del sys.modules[key]


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "lightgbm", "numpy", "pandas", "pyarrow", "numba", "scipy", "pydantic", "pyyaml")]


def _json_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Example frames are stored as JSON: make nullable/extension dtypes plain (floats, objects)."""
    out = {}
    for c in frame.columns:
        s = frame[c]
        if pd.api.types.is_bool_dtype(s) and s.isna().any():
            s = s.astype("float64")
        elif pd.api.types.is_bool_dtype(s):
            s = s.astype(bool)
        elif pd.api.types.is_integer_dtype(s) and s.isna().any():
            s = s.astype("float64")
        elif pd.api.types.is_integer_dtype(s):
            s = s.astype("int64")
        elif pd.api.types.is_float_dtype(s):
            s = s.astype("float64")
        elif pd.api.types.is_datetime64_any_dtype(s):
            s = s.astype("datetime64[ns]")
        else:
            s = s.astype(object).where(s.notna(), None)
        out[c] = s
    return pd.DataFrame(out).reset_index(drop=True)
