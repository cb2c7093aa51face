"""The in-flight window: verdicts handed to paho and not yet acknowledged, oldest first.

Invariants (every call is made under the publisher's Condition `cv`; the send side, i.e.
add/register/take_back/fail, by the sender thread only, sender.py S1):
  W1  entries are in seq order, contiguous, all with seq <= `sent_seq`; everything up to
      `acked_through` is acknowledged (or refused for good) and no longer in the window.
  W2  retire() only pops the acknowledged PREFIX, so `acked_through` never passes an
      unacknowledged message: the outbox may delete through it (at-least-once).
  W3  can_send(epoch) is False while a message handed over in an earlier connection is
      unacknowledged: paho resends those first after a reconnect, and nothing newer may
      overtake them (in order).
  W4  at most `limit` unacknowledged entries.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from edge_runtime.publish.spool import Message


@dataclass
class InFlight:
    """One message handed to paho and not yet retired from the window."""

    msg: Message
    epoch: int  # connection epoch when it was handed to paho
    acked: bool = False
    failed: bool = False  # refused by paho for good; retired and counted as dropped


class InFlightWindow:
    """The in-flight window (see the module docstring for W1-W4).

    Args:
        limit: the most unacknowledged messages at a time.
        acked_through: the seq through which everything is acknowledged at start (the
            outbox's first seq - 1).
    """

    def __init__(self, limit: int, acked_through: int) -> None:
        self.limit = limit
        self.sent_seq = acked_through
        self.acked_through = acked_through
        self._entries: collections.deque[InFlight] = collections.deque()
        self._by_mid: dict[int, InFlight] = {}
        self._early_acks: set[int] = set()  # PUBACKs that beat the registration of their mid

    def __len__(self) -> int:
        return len(self._entries)

    def unacked(self) -> int:
        """How many entries still wait for their PUBACK."""
        return sum(1 for f in self._entries if not f.acked)

    def can_send(self, epoch: int) -> bool:
        """True when one more message may be handed over in connection `epoch` (W3, W4)."""
        unacked = [f for f in self._entries if not f.acked]
        return len(unacked) < self.limit and not any(f.epoch < epoch for f in unacked)

    def add(self, msg: Message, epoch: int) -> InFlight:
        """Record `msg` (the next seq, W1) as handed over in `epoch`; returns its entry."""
        assert msg.seq == self.sent_seq + 1, (msg.seq, self.sent_seq)  # W1
        entry = InFlight(msg, epoch)
        self._entries.append(entry)
        self.sent_seq = msg.seq
        return entry

    def register(self, entry: InFlight, mid: int) -> None:
        """Tie `entry` to paho's message id (an ack that came first marks it acked)."""
        if mid in self._early_acks:
            self._early_acks.discard(mid)
            entry.acked = True
        else:
            self._by_mid[mid] = entry

    def claim_early(self, mid: int) -> bool:
        """For a non-verdict message (status) just handed over: True if its PUBACK came first.
        An early ack belongs to the next registration of its mid, whichever kind it is."""
        if mid in self._early_acks:
            self._early_acks.discard(mid)
            return True
        return False

    def ack(self, mid: int) -> None:
        """A PUBACK for `mid` (kept as early when its registration has not happened yet)."""
        entry = self._by_mid.pop(mid, None)
        if entry is None:
            self._early_acks.add(mid)
        else:
            entry.acked = True

    def fail(self, entry: InFlight) -> None:
        """paho refused `entry` for good: it retires as dropped."""
        entry.acked = entry.failed = True

    def take_back(self, entry: InFlight) -> None:
        """paho did not take the newest entry: forget it, it is sent again later."""
        assert self._entries and self._entries[-1] is entry
        self._entries.pop()
        self.sent_seq = entry.msg.seq - 1

    def retire(self) -> list[InFlight]:
        """Pop and return the acknowledged prefix (W2)."""
        out = []
        while self._entries and self._entries[0].acked:
            out.append(self._entries.popleft())
        if out:
            self.acked_through = out[-1].msg.seq
        return out
