"""The disk spool on its own: order, commit mark, restart, torn lines, size bound."""

from __future__ import annotations

from pathlib import Path

from edge_runtime.publish.spool import Message, Spool


def _msg(seq: int, size: int = 10) -> Message:
    return Message(seq, "p/verdict", ("x" * size).encode())


def _drain(spool: Spool) -> list[int]:
    out = []
    while (m := spool.read_next()) is not None:
        out.append(m.seq)
    return out


def test_order_rotation_commit_and_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=200, max_bytes=10_000)
    for seq in range(1, 21):
        assert spool.append(_msg(seq))
    assert len(list(tmp_path.glob("seg-*.jsonl"))) > 2  # rotated
    got = [spool.read_next().seq for _ in range(8)]  # type: ignore[union-attr]
    assert got == list(range(1, 9))
    spool.commit(5, force=True)
    spool.close()

    again = Spool(tmp_path, segment_bytes=200, max_bytes=10_000)
    assert again.pending() == 15
    assert again.last_seq == 20
    assert _drain(again) == list(range(6, 21))
    again.commit(20, force=True)
    assert list(tmp_path.glob("seg-*.jsonl")) == []
    again.close()
    assert Spool(tmp_path).pending() == 0


def test_torn_last_line_is_skipped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for seq in (1, 2, 3):
        spool.append(_msg(seq))
    spool.close()
    seg = next(tmp_path.glob("seg-*.jsonl"))
    data = seg.read_bytes()
    seg.write_bytes(data[:-7])  # power cut in the middle of the last line
    again = Spool(tmp_path)
    assert _drain(again) == [1, 2]
    assert again.corrupt == 1


def test_full_spool_refuses_new_and_keeps_old(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=300, max_bytes=600)
    accepted = [seq for seq in range(1, 40) if spool.append(_msg(seq, 30))]
    assert 0 < len(accepted) < 39
    assert accepted == list(range(1, len(accepted) + 1))  # a prefix: no holes
    assert spool.total_bytes <= 600
    assert _drain(spool) == accepted


def test_batch_written_at_close_goes_before_newer_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for seq in (10, 11, 12):
        spool.append(_msg(seq))
    spool.write_batch_before([_msg(7), _msg(8), _msg(9)])
    spool.close()
    assert _drain(Spool(tmp_path)) == [7, 8, 9, 10, 11, 12]


def test_one_publisher_per_spool_dir(tmp_path: Path) -> None:
    import pytest

    from edge_runtime.errors import PublishError

    first = Spool(tmp_path)
    with pytest.raises(PublishError, match="in use by another publisher"):
        Spool(tmp_path)
    first.close()
    Spool(tmp_path).close()  # released on close (and by the kernel if the process dies)
