"""`clipinspect sign`: sign a bundle's manifest (which holds every file's sha256) with ed25519."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_runtime.cli import Command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of `clipinspect sign`: the bundle and the private key."""
    p.add_argument("--bundle", required=True, type=Path, help="bundle folder (hashes are checked before signing)")
    p.add_argument("--key", required=True, type=Path, help="private key made by 'clipinspect keygen' (<key-id>.key)")


def run(args: argparse.Namespace) -> int:
    """Sign the bundle (after checking its hashes) and print the key id and signature file."""
    from edge_runtime.bundle import load_bundle
    from edge_runtime.signing import SIGNATURE, sign_bundle

    record = sign_bundle(load_bundle(args.bundle), args.key)  # hashes checked before signing
    print(
        f"signed {args.bundle} with key {record.key_id} -> {args.bundle / SIGNATURE} (payload sha256 {record.payload_sha256[:16]})"
    )
    return 0


COMMAND = Command(help="sign a bundle (ed25519 over the manifest's desktop part)", add_arguments=add_arguments, run=run)
