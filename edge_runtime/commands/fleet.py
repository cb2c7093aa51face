"""`clipinspect fleet`: one line per station from the retained MQTT status topics."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_runtime.cli import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `clipinspect fleet`: the broker, an optional station, and the rollout's `--expect-sha256` check."""
    p.add_argument(
        "--broker", required=True, help="mqtt[s]://[user@]host[:port]/PREFIX: stations publish PREFIX/<station>/status"
    )
    p.add_argument("--ca-file", type=Path, help="CA of the broker for mqtts:// (system CAs when omitted)")
    p.add_argument(
        "--password-env", default="CLIPINSPECT_FLEET_PASSWORD", help="environment variable with the broker password"
    )
    p.add_argument("--wait", type=float, default=2.0, help="seconds to gather retained statuses (default 2)")
    p.add_argument("--station", help="only this station")
    p.add_argument(
        "--expect-sha256", help="with --station: exit 0 once it is online on this bundle, else 1 (rollout health)"
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for --expect-sha256 (default 60)")


def run(args: argparse.Namespace) -> int:
    """Print one line per station; exit 1 when no station reported, or (with `--expect-sha256`) when the station is not online on that bundle in time."""
    from edge_runtime.errors import ConfigError
    from edge_runtime.fleet import FleetBroker, collect, format_line, wait_for_bundle

    broker = FleetBroker.parse(args.broker, ca_file=args.ca_file, password_env=args.password_env)
    if args.expect_sha256:
        if not args.station:
            raise ConfigError("--expect-sha256 needs --station")
        print(format_line(args.station, wait_for_bundle(broker, args.station, args.expect_sha256, args.timeout)))
        return 0
    statuses = collect(broker, wait_s=args.wait)
    if args.station:
        statuses = {k: v for k, v in statuses.items() if k == args.station}
    if not statuses:
        print(f"no station status under {broker.prefix}/+/status")
        return 1
    for station in sorted(statuses):
        print(format_line(station, statuses[station]))
    return 0


COMMAND = Command(
    help="fleet view: one line per station from the retained MQTT status topics", add_arguments=add_arguments, run=run
)
