"""A tiny threaded TCP proxy whose connections a test can cut (a network drop), or
cut just after a given request went through so that its reply is lost (e.g. a
PostgreSQL COMMIT that commits while its acknowledgement never arrives)."""

from __future__ import annotations

import contextlib
import socket
import threading

from support.stoppable import Stoppable


class _Pair:
    """One proxied connection: the client's socket and ours to the upstream."""

    def __init__(self, downstream: socket.socket, upstream: socket.socket) -> None:
        self.sockets = (downstream, upstream)
        self._lock = threading.Lock()
        self._open_pumps = 2
        self.muted = False  # replies from upstream are dropped, not relayed

    def shutdown(self) -> None:
        """Wakes both pumps (a blocked recv returns) and tells both peers."""
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def pump_done(self) -> bool:
        """True for the last pump to finish: it closes the sockets."""
        with self._lock:
            self._open_pumps -= 1
            return self._open_pumps == 0


class TcpProxy(Stoppable):
    """Forwards 127.0.0.1:<port> to ``upstream`` ("host:port"); ``cut()`` drops every
    connection in flight while new ones keep being accepted."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._pairs: set[_Pair] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.accepted = 0
        self.cuts = 0
        self._drop_reply_to: bytes | None = None
        self._cut_after: int | None = None  # client bytes still to relay before a cut
        self.replies_dropped = 0
        self._acceptor = threading.Thread(target=self._accept, name="tcpproxy-accept")
        self._acceptor.start()

    def retarget(self, upstream: str) -> None:
        """Sends new connections to another upstream (e.g. a restarted server)."""
        host, port = upstream.rsplit(":", 1)
        with self._lock:
            self.upstream = (host, int(port))

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                downstream, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            downstream.settimeout(None)
            with self._lock:
                address = self.upstream
            try:
                upstream = socket.create_connection(address, timeout=5)
            except OSError:
                downstream.close()
                continue
            upstream.settimeout(None)
            pair = _Pair(downstream, upstream)
            with self._lock:
                self._pairs.add(pair)
                self.accepted += 1
                for src, dst in ((downstream, upstream), (upstream, downstream)):
                    thread = threading.Thread(
                        target=self._pump, args=(pair, src, dst), name="tcpproxy-pump"
                    )
                    self._threads.append(thread)
                    thread.start()

    def drop_reply_to(self, marker: bytes) -> None:
        """Arms a one-shot fault: the next client message containing ``marker`` is
        delivered upstream, its reply is swallowed and the connection then cut."""
        with self._lock:
            self._drop_reply_to = marker

    def cut_after(self, client_bytes: int) -> None:
        """Arms a one-shot fault: once ``client_bytes`` more bytes from clients have
        been relayed upstream, every connection is cut (a drop mid-request body)."""
        with self._lock:
            self._cut_after = client_bytes

    def _count_towards_cut(self, sent: int) -> bool:
        with self._lock:
            if self._cut_after is None:
                return False
            self._cut_after -= sent
            if self._cut_after > 0:
                return False
            self._cut_after = None
            return True

    def _take_marker(self, data: bytes) -> bool:
        with self._lock:
            if self._drop_reply_to is None or self._drop_reply_to not in data:
                return False
            self._drop_reply_to = None
            self.replies_dropped += 1
            return True

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket) -> None:
        upstream_bound = src is pair.sockets[0]
        try:
            while data := src.recv(256 * 1024):
                if not upstream_bound and pair.muted:
                    continue
                if upstream_bound and self._take_marker(data):
                    pair.muted = True  # before sending: the reply must never get through
                    dst.sendall(data)
                    threading.Event().wait(0.5)  # let upstream act on it, then cut
                    break
                dst.sendall(data)
                if upstream_bound and self._count_towards_cut(len(data)):
                    self.cut()
                    break
        except OSError:
            pass
        finally:
            pair.shutdown()
            if pair.pump_done():
                for sock in pair.sockets:
                    sock.close()
                with self._lock:
                    self._pairs.discard(pair)

    def cut(self) -> int:
        """Drops every proxied connection now; returns how many there were."""
        with self._lock:
            pairs = list(self._pairs)
            self.cuts += 1
        for pair in pairs:
            pair.shutdown()
        return len(pairs)

    def stop(self) -> None:
        self._stopping.set()
        self._acceptor.join(5)
        self._listener.close()
        self.cut()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)
