"""A tiny TCP proxy between the publisher and the broker, so a test can hold the
publisher's packets (they stay unacknowledged, in flight) and then cut the connection,
while the subscriber stays connected to the broker directly.

`hold_after_connect=True`: each connection's first MQTT packet (CONNECT) goes through, so
the broker answers CONNACK and the publisher is connected; everything after it is
swallowed: a frozen broker or half-open link that never acknowledges anything."""

from __future__ import annotations

import socket
import threading

from edge_runtime.publish.broker import free_port


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, hold_after_connect: bool = False) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.hold_after_connect = hold_after_connect
        self.swallowed = 0  # bytes from the publisher that never reached the broker
        self.port = free_port()
        self.holding = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, to_broker: bool) -> None:
        pass_through = _first_packet_length if to_broker and self.hold_after_connect else None
        buf = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if pass_through is not None:
                    buf += data
                    n = pass_through(buf)
                    if n is None:
                        continue  # CONNECT not complete yet
                    dst.sendall(buf[:n])
                    data, pass_through = buf[n:], None
                    self.holding.set()
                if to_broker and self.holding.is_set():
                    self.swallowed += len(data)
                    continue  # swallowed: the publisher waits for PUBACKs that never come
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        """Drop every connection (like a cable pulled); new ones are forwarded again."""
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.holding.clear()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._server.close()
        self._thread.join(2)


def _first_packet_length(buf: bytes) -> int | None:
    """Length of the first MQTT packet in `buf` (fixed header + remaining length), or None."""
    mult, length = 1, 0
    for i in range(1, 5):
        if i >= len(buf):
            return None
        length += (buf[i] & 0x7F) * mult
        if not buf[i] & 0x80:
            total = 1 + i + length
            return total if len(buf) >= total else None
        mult *= 128
    raise ValueError("malformed MQTT remaining length")
