"""Result files as strict JSON: a NaN or an infinity (the score of a robot without D4RL
references, a metric that could not be measured) is written as null, so that every JSON parser
reads them (Python's json module would write NaN, which strict parsers refuse)."""

from __future__ import annotations

import json
import math
from pathlib import Path


def finite(value):
    """`value` with every non-finite float inside it replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(report, **options) -> str:
    """Strict JSON of `report` (indent 1 unless given; `default` as json.dumps)."""
    return json.dumps(finite(json.loads(json.dumps(report, default=options.pop("default", None)))),
                      indent=options.pop("indent", 1), allow_nan=False, **options)


def write(path: str | Path, report) -> Path:
    path = Path(path)
    path.write_text(dumps(report, default=str))
    return path
