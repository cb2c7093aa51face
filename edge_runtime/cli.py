"""The one `clipinspect` command. Subcommands come from the `clipinspect.commands` entry-point
group (see pyproject.toml), so this front door never imports the desktop packages and
`clipinspect --help` stays fast without torch.

Each subcommand module exposes `COMMAND = Command(...)`; its heavy imports live inside `run`.
Errors of our own type are rendered once, here, as one line, with their exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata

from edge_runtime import __version__
from edge_runtime.errors import ClipInspectError

ENTRY_POINT_GROUP = "clipinspect.commands"
log = logging.getLogger("clipinspect")


@dataclass(frozen=True)
class Command:
    """What a subcommand module exports as `COMMAND`: help text, how to add its flags, and how to run it.

    Attributes:
        help: one line for `clipinspect --help`.
        add_arguments: adds the subcommand's flags to its parser (imports nothing heavy).
        run: runs it; returns the exit code and raises our errors for bad input.
        description: longer text for `clipinspect <cmd> --help` (default: `help`).
    """

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""


class _Parser(argparse.ArgumentParser):
    # argparse's own usage errors already exit 2 with one line; keep that, but name the program.
    pass


def _discover() -> dict[str, Command]:
    commands: dict[str, Command] = {}
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            cmd = ep.load()
        except ImportError as exc:  # a broken install must not take the whole CLI down
            cmd = _unavailable(ep.name, exc)
        commands[ep.name] = cmd
    return commands


def _unavailable(name: str, exc: Exception) -> Command:
    def run(_args: argparse.Namespace) -> int:
        from edge_runtime.errors import MissingDependency

        raise MissingDependency(f"subcommand '{name}' cannot be loaded: {exc}")

    return Command(help=f"(unavailable: {exc})", add_arguments=lambda p: None, run=run)


def build_parser(commands: dict[str, Command]) -> argparse.ArgumentParser:
    """The top-level parser with the global flags and one subparser per command (its `run` stored as `_run`)."""
    parser = _Parser(
        prog="clipinspect", description="CLIP + LoRA visual anomaly detection: train, export, run on the edge."
    )
    parser.add_argument("--version", action="version", version=f"clipinspect {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in commands.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.description or cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def main(argv: Sequence[str] | None = None) -> int:
    """Run `clipinspect [global flags] COMMAND ...`.

    Args:
        argv: the arguments after the program name (default: sys.argv[1:]).

    Returns:
        The command's exit code; 2 for no command or one of our errors (printed as one
        line, no traceback; CheckFailed is 1); 130 on Ctrl-C.
    """
    commands = _discover()
    parser = build_parser(commands)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    _setup_logging(args.verbose, args.quiet)
    try:
        return int(args._run(args) or 0)
    except ClipInspectError as exc:
        print(f"clipinspect {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"clipinspect {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
