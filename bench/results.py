"""Where every benchmark writes its figures: `<out_dir>/<name>.json`, whole or not at all."""

import json
import math
import os
import statistics
from typing import Any, Dict, Sequence

from contract.files import write_text


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


def spread(values: Sequence[float]) -> Dict[str, float]:
    """min / median / max of a benchmark's repeats: every benchmark reports a spread, never one run."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def format_spread(values: Dict[str, float], fmt: str) -> str:
    """A `spread` as "min / median / max", each value formatted with `fmt`."""
    return " / ".join(format(values[k], fmt) for k in ("min", "median", "max"))


def write(out_dir: str, name: str, report: Any) -> str:
    """Writes `report` to `<out_dir>/<name>.json`; returns the path.

    A benchmark killed mid-write leaves the previous results file, never half of a new one.
    """
    return write_text(os.path.join(out_dir, f"{name}.json"), json.dumps(_plain(report), indent=2))
