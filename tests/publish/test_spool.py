"""The outbox on its own: sqlite WAL spool (order, group commit, reopen, bound, damage,
old-format import, lock) and the memory outbox."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest

from edge_runtime.errors import PublishError
from edge_runtime.publish.spool import DB_NAME, DurableQueue, MemoryQueue


def _items(first: int, n: int, size: int = 10) -> list[tuple[str, bytes]]:
    return [("p/verdict", json.dumps({"frame_id": first + i, "pad": "x" * size}).encode()) for i in range(n)]


def _frames(msgs) -> list[int]:
    return [json.loads(m.payload)["frame_id"] for m in msgs]


def test_group_commit_order_remove_and_reopen(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    stored = q.append(_items(0, 5)) + q.append(_items(5, 15))  # two transactions
    assert [m.seq for m in stored] == list(range(1, 21))  # Q1: contiguous, in call order
    assert _frames(q.read_after(0, 100)) == list(range(20))
    assert _frames(q.read_after(7, 3)) == [7, 8, 9]
    q.remove_through(5)
    assert q.pending() == 15
    # Another connection (another process after a crash) sees the committed rows: WAL mode.
    with sqlite3.connect(tmp_path / DB_NAME) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("SELECT count(*) FROM outbox").fetchone()[0] == 15
    q.close()

    again = DurableQueue(tmp_path)
    assert (again.pending(), again.first_seq, again.last_seq) == (15, 6, 20)
    assert _frames(again.read_after(again.first_seq - 1, 100)) == list(range(5, 20))
    assert [m.seq for m in again.append(_items(20, 2))] == [21, 22]  # new ones queue behind
    again.remove_through(22)
    assert again.pending() == 0 and again.nbytes == 0
    again.close()
    assert DurableQueue(tmp_path).pending() == 0


@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
def test_each_fsync_mode_sets_its_sqlite_synchronous_level(tmp_path: Path, fsync: str) -> None:
    q = DurableQueue(tmp_path, fsync=fsync)  # type: ignore[arg-type]
    level = q._db.execute("PRAGMA synchronous").fetchone()[0]
    assert level == {"always": 2, "batch": 1, "never": 0}[fsync]  # FULL, NORMAL, OFF
    q.append(_items(0, 3))
    q.sync()
    q.remove_through(1)  # "always" relaxes this delete's own fsync, then must restore FULL
    assert q._db.execute("PRAGMA synchronous").fetchone()[0] == level
    q.close()
    assert DurableQueue(tmp_path).pending() == 2


def test_byte_count_is_bytes_for_non_ascii_topics(tmp_path: Path) -> None:
    # A station prefix or camera serial in UTF-8: the bound counts bytes, in Python and in SQL alike.
    q = DurableQueue(tmp_path)
    items = [("usine-é/ligne-ü/verdict", b"{}")] * 50
    q.append(items)
    assert q.nbytes == sum(len(t.encode()) + len(b) for t, b in items)
    q.close()
    again = DurableQueue(tmp_path)
    assert again.nbytes == sum(len(t.encode()) + len(b) for t, b in items)  # recount on reopen
    again.remove_through(again.last_seq)
    assert again.nbytes == 0  # no drift: the delete subtracts what the append added
    again.close()


def test_full_spool_stores_a_prefix_of_the_batch(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path, max_bytes=600)
    one = len("p/verdict") + len(_items(0, 1, 30)[0][1])
    stored = q.append(_items(0, 40, 30))
    assert 0 < len(stored) == 600 // one < 40  # Q2: a prefix, no holes
    assert q.append(_items(40, 1, 30)) == []  # still full
    q.remove_through(stored[1].seq)  # two acknowledged: room for two more
    assert len(q.append(_items(40, 5, 30))) == 2
    assert q.nbytes <= 600


def test_a_damaged_file_is_moved_aside_and_the_spool_starts_empty(tmp_path: Path, caplog) -> None:
    (tmp_path / DB_NAME).write_bytes(b"this is not a database" * 100)
    q = DurableQueue(tmp_path)
    assert q.pending() == 0 and q.corrupt == 1
    assert list(tmp_path.glob(f"{DB_NAME}.damaged-*"))
    assert "is damaged" in caplog.text
    assert len(q.append(_items(0, 2))) == 2


def test_old_json_lines_spool_is_imported_in_order(tmp_path: Path) -> None:
    lines = [json.dumps({"seq": s, "topic": "p/verdict", "payload": json.dumps({"frame_id": s})}) for s in range(1, 8)]
    (tmp_path / "seg-00000000000000000001.jsonl").write_text("\n".join(lines[:4]) + "\n")
    (tmp_path / "seg-00000000000000000005.jsonl").write_text("\n".join(lines[4:]) + "\n" + '{"seq": 8, "top')  # torn
    (tmp_path / "committed").write_text("2\n")  # 1 and 2 were delivered
    q = DurableQueue(tmp_path)
    assert _frames(q.read_after(0, 100)) == [3, 4, 5, 6, 7]
    assert not list(tmp_path.glob("seg-*")) and not (tmp_path / "committed").exists()


def test_one_publisher_per_spool_dir(tmp_path: Path) -> None:
    first = DurableQueue(tmp_path)
    with pytest.raises(PublishError, match="in use by another publisher"):
        DurableQueue(tmp_path)
    first.close()
    DurableQueue(tmp_path).close()  # released on close (and by the kernel if the process dies)


def test_random_operations_match_a_list_model_across_reopens(tmp_path: Path) -> None:
    rng = random.Random(7)
    q = DurableQueue(tmp_path, max_bytes=4000)
    model: list[int] = []  # frame ids stored and not removed, in order
    next_frame = 0
    for _ in range(300):
        op = rng.random()
        if op < 0.5:
            n = rng.randint(1, 12)
            stored = q.append(_items(next_frame, n, rng.randint(0, 60)))
            model += _frames(stored)
            next_frame += n
        elif op < 0.8 and model:
            head = q.read_after(q.first_seq - 1, rng.randint(1, len(model)))
            q.remove_through(head[-1].seq)
            del model[: len(head)]
        elif op < 0.9:
            q.close()
            q = DurableQueue(tmp_path, max_bytes=4000)
        assert _frames(q.read_after(q.first_seq - 1, 10_000)) == model
        assert q.pending() == len(model)
    q.close()


def test_memory_outbox_is_bounded_and_ordered() -> None:
    q = MemoryQueue(5)
    assert [m.seq for m in q.append(_items(0, 8))] == [1, 2, 3, 4, 5]
    assert _frames(q.read_after(2, 10)) == [2, 3, 4]
    q.remove_through(3)
    assert [m.seq for m in q.append(_items(8, 8))] == [6, 7, 8]
    assert _frames(q.read_after(0, 10)) == [3, 4, 8, 9, 10]
