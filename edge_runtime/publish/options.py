"""Publisher options (one frozen config for every scheme; MQTT uses most of it).

Secrets need not sit in a config file: the password may come from the URI
(`mqtt://user:pass@host/prefix`), from `password`, or from the environment variable named
by `password_env` (default CLIPINSPECT_MQTT_PASSWORD), in that order of precedence.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge_runtime.config import from_mapping
from edge_runtime.errors import ConfigError

DEFAULT_PASSWORD_ENV = "CLIPINSPECT_MQTT_PASSWORD"


@dataclass(frozen=True)
class TLSOptions:
    """`ca_file` verifies the broker (system CAs when empty); cert/key give a client
    certificate. `insecure` skips the host name check only, never the chain."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("tls.cert_file and tls.key_file must be given together")


@dataclass(frozen=True)
class PublishOptions:
    """The `publish.options` section: MQTT delivery, credentials, outbox and spool settings.

    Every field is documented beside it; unknown keys are refused by `from_mapping`.

    Raises:
        ConfigError: a value out of range (one line naming the key).
    """

    qos: int = 1
    topic_prefix: str = "clipinspect"
    # Verdicts go to <prefix>/verdict, or <prefix>/<camera_serial>/verdict when True.
    per_camera_topic: bool = False
    client_id: str = ""  # empty: "clipinspect-<hostname>-<pid>-<n>"
    keepalive_s: int = 30
    tls: TLSOptions = field(default_factory=TLSOptions)
    username: str | None = None
    password: str | None = None
    password_env: str = DEFAULT_PASSWORD_ENV
    # Without spool_dir: the in-memory outbox bound (beyond it verdicts are dropped and counted).
    queue_max: int = 1000
    # Messages sent but not yet acknowledged (PUBACK). Order is kept for any value.
    max_inflight: int = 20
    # The durable outbox (sqlite WAL, <spool_dir>/spool.db): every verdict is stored there
    # before it counts as published, and deleted on its PUBACK. None: memory only (a crash
    # loses what is not yet acknowledged; said at start-up).
    spool_dir: Path | None = None
    spool_segment_bytes: int = 1 << 20  # unused since the sqlite spool; accepted for old configs
    spool_max_bytes: int = 256 << 20  # topic + payload bytes waiting; beyond it: dropped, counted
    # Power-cut promise (README "Delivery guarantees"; a process crash loses nothing in any mode):
    # always: sqlite synchronous=FULL, each group commit fsynced before the verdicts count;
    # batch: synchronous=NORMAL + a WAL sync every spool_sync_interval_s (and on flush/close);
    # never: synchronous=OFF, the OS writes back when it likes.
    spool_fsync: Literal["always", "batch", "never"] = "always"
    spool_sync_interval_s: float = 1.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    retain_status: bool = True
    # How long close() waits for the backlog to be acknowledged before spooling the rest.
    close_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.qos not in (0, 1, 2):
            raise ConfigError(f"publish.qos must be 0, 1 or 2, got {self.qos}")
        if not self.topic_prefix or "#" in self.topic_prefix or "+" in self.topic_prefix:
            raise ConfigError(f"publish.topic_prefix {self.topic_prefix!r} must be a non-empty topic without wildcards")
        if self.topic_prefix.startswith("/") or self.topic_prefix.endswith("/"):
            raise ConfigError(f"publish.topic_prefix {self.topic_prefix!r} must not start or end with '/'")
        for name in ("queue_max", "max_inflight", "spool_segment_bytes", "spool_max_bytes", "keepalive_s"):
            if getattr(self, name) < 1:
                raise ConfigError(f"publish.{name} must be >= 1, got {getattr(self, name)}")
        if self.spool_max_bytes < self.spool_segment_bytes:
            raise ConfigError("publish.spool_max_bytes must be >= publish.spool_segment_bytes")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ConfigError("publish.reconnect_min_s must be > 0 and <= publish.reconnect_max_s")
        if self.spool_sync_interval_s <= 0:
            raise ConfigError("publish.spool_sync_interval_s must be > 0")
        if self.close_timeout_s < 0:
            raise ConfigError("publish.close_timeout_s must be >= 0")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, where: str = "publish") -> PublishOptions:
        """Build and validate from a config mapping.

        Args:
            data: the mapping (None: defaults).
            where: the key path used in error messages.

        Returns:
            The options.

        Raises:
            ConfigError: an unknown key (with a suggestion) or a bad value.
        """
        return from_mapping(cls, data, where)

    def resolve_password(self, uri_password: str | None) -> str | None:
        """The password to use: the URI's, else `password`, else the `password_env` variable.

        Args:
            uri_password: the password given in the URI, if any.

        Returns:
            The password, or None for none.
        """
        if uri_password:
            return uri_password
        if self.password:
            return self.password
        return os.environ.get(self.password_env) or None
