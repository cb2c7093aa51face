"""The station status record: what `<prefix>/status` (retained) carries.

One JSON object per publication; later publications replace earlier ones (retained), so a
fleet view or a newly started subscriber always sees the latest. Fields beyond the fixed head
are optional and grow by adding keys (readers use `.get`), never by renaming:

  schema, schema_version, state ("online" | "offline"), client_id, reason, time   (always)
  station, bundle_sha256, model_id, backend, precision                               (run info)
  threshold, drop_policy, fps, frames, counts {OK, NG, SKIPPED, ERROR}, reasons {code: n},
  camera {...}, process {rss_mb, fds, threads}, alarms [...], input_alarm, input_stats,
  ok_score_mean, ok_score_window                                                     (periodic stats)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

STATUS_SCHEMA = "clipinspect.status"
STATUS_SCHEMA_VERSION = 1
_HEAD = ("schema", "schema_version", "state", "client_id", "reason", "time")


def status_record(state: str, client_id: str, reason: str, fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The status dict: the fixed head, then `fields` (which cannot override the head).

    Args:
        state: "online" or "offline" (the last will says "offline").
        client_id: the MQTT client id, so a fleet view can tell stations apart.
        reason: why this record was sent (e.g. "connected", "running", "shutdown").
        fields: optional keys from the module docstring; head keys in it are ignored.

    Returns:
        A new dict, head first, stamped with the current UTC time.
    """
    record: dict[str, Any] = {k: v for k, v in (fields or {}).items() if k not in _HEAD}
    head = {
        "schema": STATUS_SCHEMA,
        "schema_version": STATUS_SCHEMA_VERSION,
        "state": state,
        "client_id": client_id,
        "reason": reason,
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    }
    return head | record


def status_payload(state: str, client_id: str, reason: str, fields: Mapping[str, Any] | None = None) -> bytes:
    """`status_record` as compact JSON bytes (NaN refused: JSON readers reject it).

    Raises:
        ValueError: a field holds NaN or infinity.
    """
    return json.dumps(
        status_record(state, client_id, reason, fields), separators=(",", ":"), allow_nan=False, default=str
    ).encode("utf-8")
