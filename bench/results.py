"""Where every benchmark writes its figures: `<out_dir>/<name>.json`, whole or not at all."""

import json
import math
import os
import tempfile
from typing import Any


def _plain(value: Any) -> Any:
    """NumPy scalars become numbers and NaN (a failed run's missing time) becomes null: JSON has neither."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write(out_dir: str, name: str, report: Any) -> str:
    """Writes `report` to `<out_dir>/<name>.json` through a temporary file and a rename; returns the path.

    A benchmark killed mid-write leaves the previous results file, never half of a new one.
    """
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.json")
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".json", dir=out_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(_plain(report), f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
