"""The only way out of a notebook's network namespace: Unix sockets to the servers the grader chose.

The worker's network namespace has nothing but its own loopback, so it cannot reach
a classmate's Redis or any other port of the host. When a check passes the notebook a
client of a grader-owned server (the Redis under test, a Redis without modules, the
local OpenAI-compatible server), the grader `expose`s that server's TCP address as a
Unix socket in the submission's private folder, which the sandbox shows to the
notebook; the worker rebuilds the client on that socket.

One thread forwards bytes both ways for every exposed socket. It admits at most
`max_connections` learner connections at a time: a notebook that opens thousands of
connections gets refusals, while the grader's own connections to the same server
always find room (the server's `maxclients` is far above this cap). Once the grader knows the
learner's own uid (`admit_only`), a connection from any other uid is refused (SO_PEERCRED): where
learners share a filesystem (the sandbox's uid mode), a classmate's code cannot use this gateway.
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import threading
from pathlib import Path

MAX_CONNECTIONS = 64
CHUNK = 1 << 16


class Gateway:
    """Unix sockets in `folder`, each forwarding to one TCP address."""

    def __init__(self, folder: Path, max_connections: int = MAX_CONNECTIONS) -> None:
        self.folder = folder
        self.max_connections = max_connections
        self.sockets: dict[tuple[str, int], str] = {}
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.peers: dict[socket.socket, socket.socket] = {}
        self.pending: dict[socket.socket, bytearray] = {}
        self.inner: dict[socket.socket, tuple[str, int]] = {}  # the notebook's end of a pair -> its server
        self.sent: dict[tuple[str, int], int] = {}  # bytes the notebook sent to each server
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, ("wake", None))
        self.closed = False
        self.admitted: set[int] | None = None  # uids that may connect; None: any the socket's mode lets in
        self.thread = threading.Thread(target=self._run, name="redis-workbook-gateway", daemon=True)
        self.thread.start()

    def expose(self, address: tuple[str, int]) -> str:
        """The path of a Unix socket that reaches `address` (made on first use)."""
        with self.lock:
            if address in self.sockets:
                return self.sockets[address]
            path = str(self.folder / f"tcp-{len(self.sockets)}.sock")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(path)
            os.chmod(path, 0o777)  # the sandbox's uid must be able to connect; the folder decides who sees it
            listener.listen(64)
            listener.setblocking(False)
            self.sockets[address] = path
            self.selector.register(listener, selectors.EVENT_READ, ("accept", address))
        os.write(self.wake_w, b"x")
        return path

    def admit_only(self, uid: int) -> None:
        """From now on only `uid` (the learner's) and the grader's own uid may connect."""
        self.admitted = {uid, os.getuid()}

    def close(self) -> None:
        self.closed = True
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass
        self.thread.join(timeout=5)
        for key in list(self.selector.get_map().values()):
            if isinstance(key.fileobj, socket.socket):
                key.fileobj.close()
        for one in list(self.peers):
            one.close()
        self.peers.clear()
        self.selector.close()
        for fd in (self.wake_r, self.wake_w):
            os.close(fd)
        for path in self.sockets.values():
            Path(path).unlink(missing_ok=True)

    # ------------------------------------------------------------------ the forwarding thread
    def _run(self) -> None:
        while not self.closed:
            for key, events in self.selector.select(timeout=1.0):
                kind, address = key.data
                if kind == "wake":
                    os.read(self.wake_r, 4096)
                elif kind == "accept":
                    self._accept(key.fileobj, address)  # type: ignore[arg-type]
                elif key.fileobj in self.peers:
                    self._pump(key.fileobj, events)  # type: ignore[arg-type]

    def _accept(self, listener: socket.socket, address: tuple[str, int]) -> None:
        try:
            inner, _ = listener.accept()
        except OSError:
            return
        if len(self.peers) // 2 >= self.max_connections or not self._admitted(inner):
            inner.close()  # over the cap or not the learner's: refused, the server keeps room
            return
        try:
            outer = socket.create_connection(address, timeout=5)
        except OSError:
            inner.close()
            return
        self.inner[inner] = address
        for one, other in ((inner, outer), (outer, inner)):
            one.setblocking(False)
            self.peers[one] = other
            self.pending[one] = bytearray()  # bytes waiting to be written to `one`
        for one in (inner, outer):
            self._update(one)

    def _admitted(self, inner: socket.socket) -> bool:
        if self.admitted is None:
            return True
        _, uid, _ = struct.unpack("3i", inner.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        return uid in self.admitted

    def _pump(self, sock: socket.socket, events: int) -> None:
        peer = self.peers[sock]
        if events & selectors.EVENT_WRITE and not self._flush(sock):
            return
        if events & selectors.EVENT_READ and not self.pending[peer]:
            try:
                data = sock.recv(CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._drop(sock)
                return
            self.pending[peer] += data
            if sock in self.inner:
                self.sent[self.inner[sock]] = self.sent.get(self.inner[sock], 0) + len(data)
            if not self._flush(peer):
                return
        self._update(sock)
        self._update(peer)

    def _flush(self, sock: socket.socket) -> bool:
        """Write what is pending to `sock`; False when the pair was dropped."""
        buffer = self.pending[sock]
        try:
            del buffer[:sock.send(buffer)]
        except BlockingIOError:
            pass
        except OSError:
            self._drop(sock)
            return False
        return True

    def _update(self, sock: socket.socket) -> None:
        """Read from `sock` only while its peer has nothing pending (back-pressure); write while it has."""
        events = (0 if self.pending[self.peers[sock]] else selectors.EVENT_READ) | (
            selectors.EVENT_WRITE if self.pending[sock] else 0)
        try:
            self.selector.get_key(sock)
            registered = True
        except KeyError:
            registered = False
        if events:
            (self.selector.modify if registered else self.selector.register)(sock, events, ("pipe", None))
        elif registered:
            self.selector.unregister(sock)

    def _drop(self, sock: socket.socket) -> None:
        for one in (sock, self.peers.get(sock)):
            if one is None or one not in self.peers:
                continue
            try:
                self.selector.unregister(one)
            except KeyError:
                pass
            one.close()
            del self.peers[one]
            del self.pending[one]
            self.inner.pop(one, None)
