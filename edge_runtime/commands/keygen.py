"""`clipinspect keygen`: a new ed25519 key pair for signing bundles."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_runtime.cli import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `clipinspect keygen`: the output folder."""
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder for <key-id>.key (private, mode 0600) and <key-id>.pub (copy this to the stations' trusted_keys/)",
    )


def run(args: argparse.Namespace) -> int:
    """Create the key pair (never overwriting one) and print where each half belongs."""
    from edge_runtime.signing import generate_keypair

    kid, priv, pub = generate_keypair(args.out)
    print(f"key id      {kid}")
    print(f"private key {priv} (mode 0600; keep it off the stations)")
    print(f"public key  {pub} (install in /etc/clipinspect/trusted_keys/ on each station)")
    return 0


COMMAND = Command(help="create an ed25519 key pair for signing bundles", add_arguments=add_arguments, run=run)
