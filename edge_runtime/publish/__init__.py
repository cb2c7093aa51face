"""Verdict publishers, picked by URI."""
