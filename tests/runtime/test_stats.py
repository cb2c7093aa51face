from __future__ import annotations

import numpy as np

from edge_runtime.stats import LatencyRecorder, summarize


def test_percentiles_match_numpy():
    data = np.random.default_rng(0).exponential(10, 1000)
    s = summarize(data)
    assert s.count == 1000
    np.testing.assert_allclose([s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms], [*np.percentile(data, [50, 90, 99]), data.max()])


def test_recorder_window_keeps_recent_but_counts_all():
    rec = LatencyRecorder(window=10)
    for i in range(100):
        rec.record({"inference": float(i)})
    s = rec.summary("inference")
    assert s.count == 100 and s.max_ms == 99.0 and s.p50_ms == np.percentile(np.arange(90, 100), 50)
    rec.count("drops_inference_queue", 3)
    snap = rec.snapshot()
    assert snap["frames"] == 100 and snap["counters"] == {"drops_inference_queue": 3}


def test_empty_summary_is_nan_not_error():
    s = summarize([])
    assert s.count == 0 and np.isnan(s.p50_ms)
