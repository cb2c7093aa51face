from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.stats import LatencyRecorder, summarize


def test_percentiles_match_numpy():
    data = np.random.default_rng(0).exponential(10, 1000)
    s = summarize(data)
    assert s.count == 1000
    np.testing.assert_allclose(
        [s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms], [*np.percentile(data, [50, 90, 99]), data.max()]
    )


def test_recorder_keeps_a_bounded_reservoir_but_counts_all():
    rec = LatencyRecorder(window=10, recent=5)
    for i in range(100):
        rec.record({"inference": float(i)})
    s = rec.summary("inference")
    # count, mean and max are exact over the whole run; the percentiles come from <= 10 samples.
    assert s.count == 100 and s.max_ms == 99.0 and s.mean_ms == 49.5
    assert rec.samples("inference").size == 10 and rec.recent("inference").tolist() == [95.0, 96.0, 97.0, 98.0, 99.0]
    rec.count("drops_inference_queue", 3)
    snap = rec.snapshot()
    assert snap["frames"] == 100 and snap["counters"] == {"drops_inference_queue": 3}


def test_reservoir_percentiles_describe_the_whole_run_in_bounded_memory():
    # A run whose latency doubles half-way: a recent window would report only the second
    # half; the reservoir keeps a uniform sample of both halves.
    rng = np.random.default_rng(1)
    data = np.concatenate([rng.normal(10, 1, 50_000), rng.normal(20, 1, 50_000)])
    rec = LatencyRecorder(window=2_000)
    for v in data:
        rec.record({"inference": float(v)})
    s = rec.summary("inference")
    assert rec.samples("inference").size == 2_000
    true90, true99 = np.percentile(data, [90, 99])
    assert abs(s.p90_ms - true90) < 0.3 and abs(s.p99_ms - true99) < 0.5
    # Half the kept samples come from each half of the run.
    assert 0.45 < float(np.mean(rec.samples("inference") < 15.0)) < 0.55
    assert s.count == 100_000 and s.mean_ms == pytest.approx(data.mean())


def test_short_runs_keep_every_sample_exactly():
    rec = LatencyRecorder(window=100)
    for i in range(50):
        rec.record({"inference": float(i)})
    assert rec.samples("inference").tolist() == [float(i) for i in range(50)]


def test_skipped_records_stay_out_of_latency_and_fps():
    from edge_runtime.stats import RecordStages

    rec = LatencyRecorder()
    rec.record({"total": 5.0})
    rec.record(RecordStages({"publish": 0.1, "total": 0.2}))
    assert rec.frames == 1 and rec.summary("total").count == 1 and rec.counters() == {"records_published": 1}


def test_empty_summary_is_nan_not_error():
    s = summarize([])
    assert s.count == 0 and np.isnan(s.p50_ms)
