from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from edge_runtime.backends import BACKENDS, BackendBase, make_backend
from edge_runtime.cli import main
from edge_runtime.errors import ConfigError
from edge_runtime.registry import Entry
from edge_runtime.runtime_config import BackendSection, load_runtime_config


def test_config_file_sets_every_section_and_flags_win(tmp_path):
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(
        """
bundle: {path: /opt/b, verify: false}
source: {uri: "synthetic://", options: {fps: 5, timeout_ms: 200}}
backend: {name: ort-cpu, precision: int8, intra_op_threads: 1}
publish: {uri: "mqtt://broker/line1", options: {qos: 0, topic_prefix: line1}}
pipeline: {inference_queue: 4, drop_policy: block, stats_interval_s: 2}
preprocess: {roi: [0, 0, 100, 50]}
heatmaps: {dir: /tmp/hm, max_files: 7, only_ng: false}
threshold: 0.7
"""
    )
    cfg = load_runtime_config(
        cfg_file, ["pipeline.publish_queue=9", "threshold=0.4"], {"backend.precision": "fp32", "source.uri": None}
    )
    assert str(cfg.bundle.path) == "/opt/b" and cfg.bundle.verify is False
    assert cfg.source.uri == "synthetic://" and cfg.source.options.fps == 5.0 and cfg.source.options.timeout_ms == 200
    assert cfg.backend.precision == "fp32" and cfg.backend.options() == {"intra_op_threads": 1, "allow_spinning": True}
    assert cfg.publish.options.qos == 0 and cfg.publish.uri == "mqtt://broker/line1"
    assert (cfg.pipeline.inference_queue, cfg.pipeline.drop_policy, cfg.pipeline.publish_queue) == (4, "block", 9)
    assert cfg.preprocess.roi_obj().width == 100 and cfg.heatmaps.max_files == 7 and cfg.threshold == 0.4


@pytest.mark.parametrize(
    "override, message",
    [
        ("pipeline.drop_policy=oldest", "pipeline.drop_policy"),
        ("source.options.exposure=5", "source.options.exposure"),
        ("threshold=3", "threshold must be in [0, 1]"),
        ("heatmaps.max_files=0", "max_files"),
        ("backend.intra_op_threads=-2", "intra_op_threads"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_runtime_config(None, [override])


def test_stdout_publisher_keeps_stdout_clean(toy_bundle, capsys):
    rc = main(
        [
            "run",
            "--bundle",
            str(toy_bundle.root),
            "--source",
            "synthetic://?width=64&height=64&count=3",
            "--publish",
            "stdout://",
            "--set",
            "pipeline.drop_policy=block",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0
    lines = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    assert [v["frame_id"] for v in lines] == [0, 1, 2]
    assert "published 3" in captured.err


@dataclass(frozen=True)
class ThreadsOnly:
    """A plug-in backend's options type: it takes the thread count and nothing else."""

    intra_op_threads: int = 0


class ThreadedPlugin(BackendBase):
    """A plug-in backend (not ONNX Runtime) that takes `ThreadsOnly` options."""

    def __init__(self, intra_op_threads: int = 0) -> None:
        super().__init__()
        self.intra_op_threads = intra_op_threads

    @classmethod
    def create(cls, name: str, **options):
        backend = cls(**options)
        backend.name = name
        return backend


def test_backend_options_come_from_the_registry_rows_options_type():
    row = Entry("threaded-plugin", f"{__name__}:ThreadedPlugin", f"{__name__}:ThreadsOnly")
    with BACKENDS.added(row):
        section = BackendSection(name="threaded-plugin", intra_op_threads=3, allow_spinning=False)
        assert section.options() == {"intra_op_threads": 3}
        assert make_backend(section.name, **section.options()).intra_op_threads == 3
    with BACKENDS.added(Entry("ort-lookalike", f"{__name__}:ThreadedPlugin")):  # the name says nothing: no options type
        assert BackendSection(name="ort-lookalike", intra_op_threads=3).options() == {}
    assert BackendSection(name="ort-cpu", intra_op_threads=2).options() == {
        "intra_op_threads": 2,
        "allow_spinning": True,
    }
    assert BackendSection(name="trt", intra_op_threads=2).options() == {}
    with pytest.raises(ConfigError, match="unknown backend 'nope'"):
        BackendSection(name="nope").options()
