"""`clipinspect doctor`: backends, providers, SDK versions, cameras, broker, bundle, Jetson mode."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_runtime.cli import Command

_MARK = {"ok": "ok  ", "fail": "FAIL", "info": "info", "skip": "--  "}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The doctor flags."""
    p.add_argument("--bundle", type=Path, help="also check this bundle (manifest, sha256 of every file)")
    p.add_argument(
        "--trusted-keys",
        type=Path,
        metavar="DIR",
        help="check the bundle's signature against these keys (default /etc/clipinspect/trusted_keys when it holds keys)",
    )
    p.add_argument(
        "--broker",
        help="also check this MQTT broker: mqtt(s)://[user:pass@]host[:port] (connect through paho, wait for CONNACK)",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="runtime config YAML: its publish.options (TLS files, credentials) are used for the broker check, "
        "and its publish.uri is checked when it is mqtt(s):// and --broker is not given",
    )
    p.add_argument("--backend", help="fail unless this backend can run here (e.g. trt, ort-cuda)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per network/subprocess probe (default 3)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _broker_and_options(args: argparse.Namespace) -> tuple[str | None, object]:
    if args.config is None:
        return args.broker, None
    from edge_runtime.runtime_config import load_runtime_config

    publish = load_runtime_config(args.config).publish
    broker = args.broker
    if broker is None and publish.uri.split("://", 1)[0].lower() in ("mqtt", "mqtts"):
        broker = publish.uri
    return broker, publish.options


def run(args: argparse.Namespace) -> int:
    """Run the checks, print them (a table or --json); exit 1 when a requested one failed."""
    from edge_runtime.doctor import failed, run_checks

    broker, options = _broker_and_options(args)
    checks = run_checks(
        bundle=args.bundle,
        broker=broker,
        backend=args.backend,
        timeout_s=args.timeout,
        trusted_keys=args.trusted_keys,
        publish_options=options,
    )
    bad = failed(checks)
    if args.json:
        print(json.dumps({"ok": not bad, "checks": [c.as_dict() for c in checks]}, indent=2, default=str))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(f"[{_MARK[c.status]}] {c.name:<{width}}  {c.detail}")
        print(
            "doctor: "
            + (
                "all requested checks passed"
                if not bad
                else f"{len(bad)} requested check(s) failed: {', '.join(c.name for c in bad)}"
            )
        )
    return 1 if bad else 0


COMMAND = Command(
    help="check this device: backends, SDKs, cameras, broker, bundle, power mode", add_arguments=add_arguments, run=run
)
