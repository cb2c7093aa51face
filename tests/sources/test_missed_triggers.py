"""Missed hardware triggers: counted on the camera (Counter0 = trigger edges, Counter1 =
ExposureStart) and published in the source stats, the status record and its alarms.

The PySpin stand-in (tests/fakes/PySpin.py) knows the truth: an edge sooner than ExposureTime
+ readout after the last accepted one makes no exposure (`fake_missed`). The GenTL path runs
on a harvesters-style node map over the same fake camera: the `viky.cti` simulator has no
trigger or counter features (checked below: it reports "unsupported").
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from edge_runtime.sources import make_source, open_source
from edge_runtime.sources.trigger_counters import TriggerCounters, missed_trigger_alarm
from edge_runtime.status import status_payload

HW = {"trigger": "hardware", "exposure_us": 5000.0, "timeout_ms": 20, "reconnect_backoff_s": 0.001}


def pulse_train(dev, n, period_s, start=1000.0):
    """`n` pulses `period_s` apart on the sensor clock; returns how many made an exposure."""
    return sum(dev.pulse(at=start + i * period_s) for i in range(n))


def read_all(src, n):
    frames = [src.read() for _ in range(n)]
    return [f for f in frames if f is not None]


def event_source(dev, counter):
    return dev.nodemap.GetNode("CounterEventSource").entries[dev.counters[counter]["CounterEventSource"]].symbolic


def counter_settings(dev, counter):
    return {k: v for k, v in dev.counters[counter].items() if k != "CounterValue"}


def test_pulses_faster_than_the_camera_are_counted_as_missed(pyspin):
    # Busy 5 ms exposure + 2 ms readout = 7 ms; a pulse every 4 ms: every second one is missed.
    dev = pyspin.fake_add_camera("1", readout_us=2000.0)
    before = {c: counter_settings(dev, c) for c in dev.counters}
    with open_source("spinnaker://1", HW) as src:
        assert [event_source(dev, c) for c in ("Counter0", "Counter1")] == ["Line0", "ExposureStart"]
        accepted = pulse_train(dev, 20, 0.004)
        frames = read_all(src, accepted)
        stats = src.stats()
    assert accepted == 10 and dev.fake_missed == 10 and len(frames) == 10
    assert stats["trigger_edges"] == 20 and stats["missed_triggers"] == 10 == dev.fake_missed
    assert stats["missed_triggers_source"] == "device_counters"
    # Invisible to the frame-id check: the camera never made those frames.
    assert stats["camera_skipped"] == 0 and [f.meta["device_frame_id"] for f in frames] == list(range(1, 11))
    assert stats["stream_lost"] == 0 and stats["stream_dropped"] == 0
    # The counters' own settings were put back at close.
    assert {c: counter_settings(dev, c) for c in dev.counters} == before


def test_slow_pulses_miss_nothing_and_the_count_follows_the_trigger_edge(pyspin):
    dev = pyspin.fake_add_camera("1", readout_us=2000.0)
    with open_source("spinnaker://1", {**HW, "trigger_line": "Line2", "trigger_edge": "FallingEdge"}) as src:
        assert (
            event_source(dev, "Counter0") == "Line2" and dev.counters["Counter0"]["CounterEventActivation"] == 2
        )  # FallingEdge
        assert pulse_train(dev, 6, 0.010) == 6
        dev.pulse(line="Line0", at=2000.0)  # another line: not a trigger, not counted
        assert len(read_all(src, 6)) == 6
        stats = src.stats()
    assert stats["trigger_edges"] == 6 and stats["missed_triggers"] == 0 and dev.fake_missed == 0
    assert event_source(dev, "Counter0") == event_source(dev, "Counter1") == "Off"  # restored at close


@pytest.mark.parametrize("trigger, source", [("off", "no_trigger"), ("software", "software_trigger")])
def test_without_a_hardware_trigger_the_count_is_null_and_says_why(pyspin, trigger, source):
    dev = pyspin.fake_add_camera("1")
    with open_source("spinnaker://1", {"trigger": trigger, "timeout_ms": 20}) as src:
        assert len(read_all(src, 3)) == 3
        stats = src.stats()
    assert stats["missed_triggers"] is None and stats["trigger_edges"] is None
    assert stats["missed_triggers_source"] == source
    assert dev.nodemap.GetNode("CounterEventSource").fake_sets == []  # counters untouched
    json.loads(status_payload("online", "c", "", {"camera": stats}))  # nulls, not NaN: valid JSON


def test_counting_switched_off_leaves_the_counters_to_the_strobe_and_says_so(pyspin):
    dev = pyspin.fake_add_camera("1")
    with open_source("spinnaker://1?trigger_counters=0", HW) as src:
        assert pulse_train(dev, 4, 0.004) < 4  # some missed: the camera knows, we were told not to count
        read_all(src, 2)
        stats = src.stats()
    assert stats["missed_triggers"] is None and stats["missed_triggers_source"] == "disabled"
    assert dev.nodemap.GetNode("CounterEventSource").fake_sets == []  # counters untouched


def test_camera_without_counter_nodes_is_unsupported_and_the_run_goes_on(pyspin, caplog):
    caplog.set_level(logging.WARNING)
    dev = pyspin.fake_add_camera("1", counters=False)
    with open_source("spinnaker://1", HW) as src:
        assert pulse_train(dev, 3, 0.010) == 3
        assert len(read_all(src, 3)) == 3
        stats = src.stats()
    assert stats["missed_triggers"] is None and stats["missed_triggers_source"] == "unsupported"
    assert stats["delivered"] == 3
    assert [r.getMessage() for r in caplog.records if "missed triggers cannot be counted" in r.getMessage()] == [
        "spinnaker://1: missed triggers cannot be counted on this camera: camera has no node CounterSelector"
    ]


def test_a_refused_node_write_is_one_warning_and_what_was_set_is_put_back(pyspin, caplog):
    caplog.set_level(logging.WARNING)
    dev = pyspin.fake_add_camera("1")
    dev.nodemap.GetNode("CounterEventActivation")._writable = lambda: False  # stuck at RisingEdge
    with open_source("spinnaker://1", {**HW, "trigger_edge": "FallingEdge"}) as src:
        assert pulse_train(dev, 2, 0.010) == 2
        assert len(read_all(src, 2)) == 2
        stats = src.stats()
        assert event_source(dev, "Counter0") == "Off"  # what was set is put back at once
    assert stats["missed_triggers"] is None and stats["missed_triggers_source"] == "unsupported"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "spinnaker://1: missed triggers cannot be counted on this camera: CounterEventActivation is not writable"
    ]


@pytest.mark.parametrize("stuck", [("Counter0", "Counter1"), ("Counter0",), ("Counter1",)])
def test_counters_that_do_not_count_are_reported_not_trusted(pyspin, monkeypatch, stuck):
    dev = pyspin.fake_add_camera("1", readout_us=2000.0)
    status = dev.counter_status
    # e.g. a firmware whose counters wait for a start trigger forever
    monkeypatch.setattr(dev, "counter_status", lambda counter: 1 if counter in stuck else status(counter))
    with open_source("spinnaker://1", HW) as src:
        accepted = pulse_train(dev, 6, 0.004)
        read_all(src, accepted)
        stats = src.stats()
    assert dev.fake_missed == 3  # the truth: 3 missed, which the camera could not tell us
    assert stats["missed_triggers"] is None and stats["missed_triggers_source"] == "counters_not_counting"


def test_counters_near_their_maximum_are_reset_and_the_totals_carry_on(pyspin):
    dev = pyspin.fake_add_camera("1", readout_us=2000.0, counter_max=40)  # re-armed past 30
    with open_source("spinnaker://1", HW) as src:
        for batch in range(10):
            accepted = pulse_train(dev, 8, 0.004, start=1000.0 + batch)
            assert len(read_all(src, accepted)) == accepted
            src.stats()  # a status every batch reads (and re-arms) the counters
        stats = src.stats()
    assert dev.fake_missed == 40 and dev.fake_edges == 80
    assert stats["trigger_edges"] == 80 and stats["missed_triggers"] == 40
    assert max(c["CounterValue"] for c in dev.counters.values()) < 40  # never stopped at the top


def test_missed_triggers_carry_over_a_reconnect(pyspin):
    dev = pyspin.fake_add_camera("1", readout_us=2000.0)
    with open_source("spinnaker://1", HW) as src:
        read_all(src, pulse_train(dev, 4, 0.004))
        assert src.stats()["missed_triggers"] == 2
        dev.lose()
        assert src.read() is None  # device lost -> torn down -> reconnected and re-armed
        assert src.stats()["reconnects"] == 1
        read_all(src, pulse_train(dev, 6, 0.004, start=5000.0))
        stats = src.stats()
    assert dev.fake_missed == 5 and stats["missed_triggers"] == 5 and stats["trigger_edges"] == 10


def test_host_side_losses_are_stream_lost_not_missed_triggers(pyspin):
    dev = pyspin.fake_add_camera("1")
    with open_source("spinnaker://1", {**HW, "buffer_count": 1}) as src:
        assert pulse_train(dev, 4, 0.010) == 4
        assert src.read().meta["device_frame_id"] == 1
        held = src._cam.GetNextImage(20)  # frame 2: someone sits on the only buffer
        assert src.read() is None  # frame 3 finds no free buffer: lost on the host
        held.Release()
        assert src.read().meta["device_frame_id"] == 4
        stats = src.stats()
    # Exposed, so not a missed trigger; the stream counts the loss and the id gap shows 2 and 3.
    assert stats["missed_triggers"] == 0 and stats["stream_lost"] == 1 and stats["camera_skipped"] == 2


def test_missed_trigger_alarm_fires_only_while_the_count_grows():
    assert missed_trigger_alarm({"missed_triggers": None}, None) == ([], None)
    assert missed_trigger_alarm({"missed_triggers": 0}, None) == ([], 0)
    assert missed_trigger_alarm({"missed_triggers": 2}, 0) == (["camera_missed_triggers"], 2)
    assert missed_trigger_alarm({"missed_triggers": 2}, 2) == ([], 2)
    assert missed_trigger_alarm({"error": "x"}, 2) == ([], 2)


def test_a_sample_between_an_edge_and_its_exposure_never_counts_high():
    class Nodes:  # Counter0 read, then an edge + its exposure, then Counter1 read
        def __init__(self):
            self.values = {"Counter0": 0, "Counter1": 0}
            self.selected = "Counter0"
            self.script = []

        def get(self, name):
            value = self.values[self.selected]
            if self.script:
                self.script.pop(0)()
            return value

        def set(self, name, value):
            if name == "CounterSelector":
                self.selected = value

        def maximum(self, name):
            return None

        def execute(self, name):
            return True

    nodes = Nodes()
    counters = TriggerCounters("test://", "hardware")
    assert counters.arm(nodes, "Line0", "RisingEdge")

    def edge_and_exposure():
        nodes.values["Counter0"] += 1
        nodes.values["Counter1"] += 1

    nodes.script = [edge_and_exposure]
    counters.sample(nodes, 1)
    assert counters.stats()["missed_triggers"] == 0  # edges 0, exposures 1: not -1, not +1
    nodes.values["Counter0"] += 1  # a real miss
    counters.sample(nodes, 1)
    assert counters.stats()["missed_triggers"] == 1 and counters.stats()["trigger_edges"] == 2


# -- GenTL ------------------------------------------------------------------------------------
class _Feature:
    """A harvesters node (value by symbolic name, .max, .execute()) over a fake camera node."""

    def __init__(self, ps, node):
        self._ps, self._node = ps, node

    @property
    def value(self):
        n = self._node
        return n.entries[n.value].symbolic if n.kind == self._ps.intfIEnumeration else n.value

    @value.setter
    def value(self, v):
        n = self._node
        if n.kind == self._ps.intfIEnumeration:
            names = [e.symbolic for e in n.entries]
            if v not in names:
                raise ValueError(f"{v!r} is not an entry of {n.name}")
            v = names.index(v)
        n.set(v)

    @property
    def max(self):
        return self._node.hi()

    @property
    def symbolics(self):
        return tuple(e.symbolic for e in self._node.entries)

    def execute(self):
        self._ps.CCommandPtr(self._node).Execute()


class _NodeMap:
    def __init__(self, ps, nodemap):
        self._ps, self._nodemap = ps, nodemap

    def __getattr__(self, name):
        node = self._nodemap.GetNode(name)
        if node is None:
            raise AttributeError(name)
        return _Feature(self._ps, node)


class _Acquirer:
    """Shaped like harvesters' ImageAcquirer over the fake camera."""

    def __init__(self, ps, dev):
        self.dev, self.num_buffers, self.min_num_buffers = dev, 1, 1
        self.remote_device = SimpleNamespace(node_map=_NodeMap(ps, dev.nodemap))
        self.data_streams = [SimpleNamespace(node_map=_NodeMap(ps, dev.stream_nodemap))]

    def start(self):
        self.dev.begin()

    def stop(self):
        self.dev.streaming = False

    def destroy(self):
        pass

    def is_acquiring(self):
        return self.dev.streaming

    @contextmanager
    def fetch(self, timeout):
        if not self.dev.frame_available():
            raise TimeoutError("no buffer")
        slot, _ = self.dev.fill()
        data = self.dev.pool[slot].reshape(-1)
        h, w = self.dev.pool[slot].shape[:2]
        component = SimpleNamespace(data=data, width=w, height=h, num_components_per_pixel=1, data_format="Mono8")
        try:
            yield SimpleNamespace(
                frame_id=self.dev.frame_id,
                timestamp_ns=0,
                module=SimpleNamespace(is_complete=lambda: True),
                payload=SimpleNamespace(components=[component]),
            )
        finally:
            self.dev.out.discard(slot)


def test_gentl_counts_missed_triggers_through_genapi_features(pyspin):
    dev = pyspin.fake_add_camera("1", readout_us=2000.0, pixel_formats=("Mono8",))
    src = make_source("gentl://?serial=1", HW)
    src._ia = _Acquirer(pyspin, dev)
    src._configure()
    src._ia.start()
    src._opened = True
    assert dev.value("TriggerMode") == "On" and event_source(dev, "Counter0") == "Line0"
    accepted = pulse_train(dev, 12, 0.004)
    assert len(read_all(src, accepted)) == accepted == 6
    stats = src.stats()
    src.close()
    assert stats["trigger_edges"] == 12 and stats["missed_triggers"] == 6 == dev.fake_missed
    assert stats["missed_triggers_source"] == "device_counters" and stats["stream_lost"] == 0
    assert event_source(dev, "Counter0") == event_source(dev, "Counter1") == "Off"
    assert src.stats()["missed_triggers"] == 6  # the totals outlive close()


@pytest.mark.camera
def test_viky_simulator_has_no_counters_so_the_count_is_null():
    from edge_runtime.sources.gentl import simulator_producer

    cti = simulator_producer()
    if cti is None:
        pytest.skip("no GenTL simulator: needs the genicam wheel (ships viky.cti) and harvesters")
    with open_source(f"gentl://{cti}?serial=1", {"trigger": "hardware", "timeout_ms": 2000}) as src:
        stats = src.stats()
    assert stats["missed_triggers"] is None and stats["missed_triggers_source"] == "unsupported"
    assert stats["stream_lost"] is None and stats["stream_dropped"] is None  # viky's stream has neither


# -- through the pipeline into the status record ------------------------------------------------
class _StatusPublisher:
    """In-memory publisher that keeps verdicts and every status as the broker would see it."""

    uri = "list://"

    def __init__(self):
        self.verdicts, self.statuses = [], []

    def publish(self, verdict):
        self.verdicts.append(dict(verdict))

    def publish_status(self, fields):
        self.statuses.append(json.loads(status_payload("online", "station-test", "", fields)))

    def flush(self, timeout_s=10.0):
        return True


def test_status_record_carries_camera_counters_and_alarms_on_growth(pyspin, toy_bundle, caplog):
    import threading
    import time

    from edge_runtime.backends import make_backend
    from edge_runtime.pipeline import Pipeline, PipelineOptions, make_preprocessor
    from edge_runtime.postprocess import Postprocessor

    caplog.set_level(logging.INFO, logger="edge_runtime.pipeline")
    backend = make_backend("ort-cpu", intra_op_threads=1)
    backend.load(toy_bundle, "fp32")
    dev = pyspin.fake_add_camera("9", readout_us=2000.0, pixel_formats=("RGB8",))
    pub = _StatusPublisher()
    with open_source("spinnaker://9", HW) as src:
        assert pulse_train(dev, 8, 0.004) == 4
        options = PipelineOptions(stats_interval_s=0.05, drop_policy="block")
        pipe = Pipeline(
            src,
            backend,
            Postprocessor(toy_bundle, backend.describe()),
            pub,
            make_preprocessor(toy_bundle),
            options,
            max_frames=8,
        )

        def second_train():  # parts keep coming while the line runs: 4 more missed
            deadline = time.monotonic() + 10
            while pipe.progress()["captured"] < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.15)  # at least one status in between
            pulse_train(dev, 8, 0.004, start=2000.0)

        feeder = threading.Thread(target=second_train)
        feeder.start()
        result = pipe.run()
        feeder.join()
    assert result.captured == 8 and dev.fake_missed == 8
    last = pub.statuses[-1]["camera"]
    assert (
        last["missed_triggers"] == 8
        and last["trigger_edges"] == 16
        and last["missed_triggers_source"] == "device_counters"
    )
    assert last["stream_lost"] == 0
    # An alarm exactly in the statuses where the count grew since the one before.
    seen, grew_with_alarm = None, 0
    for status in pub.statuses:
        missed = status["camera"]["missed_triggers"]
        grew = missed > (seen or 0)
        assert ("camera_missed_triggers" in status.get("alarms", [])) == grew, (seen, status)
        grew_with_alarm += grew
        seen = missed
    assert grew_with_alarm >= 2  # the first train, then the second
    assert any("missed_triggers" in r.getMessage() for r in caplog.records if r.getMessage().startswith("stats:"))


def test_run_summary_reports_missed_triggers(pyspin, toy_bundle, tmp_path, capsys):
    import threading
    import time

    from edge_runtime.cli import main

    dev = pyspin.fake_add_camera("5", readout_us=1000.0)

    def pulser():  # pairs of pulses microseconds apart against a 6 ms busy camera, real clock
        deadline = time.monotonic() + 10
        while not dev.streaming and time.monotonic() < deadline:
            time.sleep(0.005)
        for _ in range(20):
            dev.pulse()
            dev.pulse()
            time.sleep(0.01)

    thread = threading.Thread(target=pulser)
    thread.start()
    summary = tmp_path / "summary.json"
    uri = "spinnaker://5?trigger=hardware&exposure_us=5000&timeout_ms=50"
    rc = main(
        [
            "run",
            "--bundle",
            str(toy_bundle.root),
            "--source",
            uri,
            "--publish",
            "stdout://",
            "--duration",
            "1.5",
            "--summary-json",
            str(summary),
        ]
    )
    thread.join()
    capsys.readouterr()
    assert rc == 0
    camera = json.loads(summary.read_text())["source_stats"]
    assert dev.fake_edges == 40 and dev.fake_missed > 0
    assert camera["trigger_edges"] == 40 and camera["missed_triggers"] == dev.fake_missed
    assert camera["delivered"] == 40 - dev.fake_missed
