"""The registry shape shared by sources, publishers and backends."""

from __future__ import annotations

import sys

import pytest

from edge_runtime.errors import ConfigError, MissingDependency, SourceError
from edge_runtime.registry import Entry, Registry


def test_lookup_is_case_insensitive_and_covers_aliases():
    reg = Registry("thing", [Entry("cv", "collections:OrderedDict", aliases=("gst",), summary="cv://N")])
    assert reg.load("CV") is reg.load("gst")
    assert "gst" in reg and "nope" not in reg
    assert reg.names() == ["cv"]


def test_unknown_name_raises_the_seams_error_listing_known_names():
    reg = Registry("source", [Entry("a", "collections:deque"), Entry("b", "collections:deque")], error=SourceError)
    with pytest.raises(SourceError, match=r"unknown source 'zz'; use one of a, b"):
        reg.entry("zz")


def test_missing_module_is_a_missing_dependency_not_an_import_error():
    reg = Registry("backend", [Entry("x", "no_such_module_for_clipinspect:Thing")])
    with pytest.raises(MissingDependency, match="backend x"):
        reg.load("x")


def test_availability_does_not_import_the_target():
    sys.modules.pop("json.tool", None)
    reg = Registry(
        "p",
        [Entry("j", "json.tool:main", requires=("json",)), Entry("n", "json.tool:main", requires=("no_such_mod_xyz",))],
    )
    rows = {a.name: a for a in reg.availability()}
    assert rows["j"].available and not rows["n"].available
    assert "no_such_mod_xyz" in rows["n"].detail
    assert "json.tool" not in sys.modules


def test_duplicate_names_and_bad_targets_are_refused():
    with pytest.raises(ValueError, match="twice"):
        Registry("p", [Entry("a", "m:C"), Entry("b", "m:C", aliases=("a",))])
    with pytest.raises(ValueError, match="module:Class"):
        Entry("a", "no_colon")


def test_extra_rows_follow_builtins_and_never_shadow_them():
    reg = Registry(
        "backend",
        [Entry("a", "collections:deque")],
        extra=lambda: [Entry("a", "collections:Counter"), Entry("z", "collections:Counter")],
    )
    assert reg.names() == ["a", "z"]
    import collections

    assert reg.load("a") is collections.deque and reg.load("z") is collections.Counter
    assert reg.help_text(indent="").splitlines() == ["a", "z"] and reg.options_type("a") is None


def test_register_adds_a_row_used_by_every_lookup():
    reg = Registry("publisher", [Entry("a", "collections:deque", summary="a://")], error=ConfigError)
    reg.register(Entry("new", "collections:Counter", summary="new://thing"))
    assert "new" in reg.names() and "new://thing" in reg.help_text()


def test_added_row_lives_only_inside_the_with_block():
    reg = Registry("publisher", [Entry("a", "collections:deque")])
    with reg.added(Entry("tmp", "collections:Counter", aliases=("t",))):
        assert reg.names() == ["a", "tmp"] and "t" in reg
    assert reg.names() == ["a"] and "t" not in reg and "tmp" not in reg
