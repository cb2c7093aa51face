"""Reading the JSON files a run, a data set or a merged model keeps (one error shape for all)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge_runtime.errors import DataError


def read_json(path: Path, what: str = "") -> Any:
    """The JSON document in `path`.

    Args:
        path: the file.
        what: names the file in the error message ("data manifest" -> "cannot read data manifest P: ...").

    Raises:
        DataError: the file cannot be read, is not UTF-8, or is not JSON.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {what + ' ' if what else ''}{path}: {exc}") from None
