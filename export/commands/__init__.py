"""Subcommand modules (one per command, each exposing COMMAND; heavy imports inside run)."""
