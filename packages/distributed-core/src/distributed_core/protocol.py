"""Length-prefixed framing, free of I/O.

A message on the wire is::

    <Q n            number of frames (n >= 1)
    <Q len_0 ... len_{n-1}
    frame_0 ... frame_{n-1}

Frame 0 is the msgpack-encoded message; frames 1..n-1 are out-of-band
buffers it refers to (see :mod:`distributed_core.serialize`). All integers
are little-endian unsigned 64-bit, whatever the machine.

Every length is checked against :class:`Limits` *before* anything is
allocated for it. :class:`Decoder` turns bytes, in any chunking, into lists
of frames; the I/O layer (:mod:`distributed_core.comm`) uses the same
checks while it reads large frames straight into preallocated buffers.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from .errors import LocalProtocolError, RemoteProtocolError

__all__ = ["Decoder", "Limits", "check_count", "check_lengths", "frame_header", "pack_frames"]

_Q = struct.Struct("<Q")


def _memory_total() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16 * 2**30


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what a peer may make us allocate for one message.

    The defaults allow one message up to half the machine's memory.
    ``Limits.handshake()`` is the much tighter bound used before a peer
    has authenticated.
    """

    max_frames: int = 100_000
    max_frame_bytes: int = _memory_total() // 2
    max_message_bytes: int = _memory_total() // 2

    @classmethod
    def handshake(cls) -> Limits:
        """Limits for the hello messages: a handful of small frames."""
        return cls(max_frames=4, max_frame_bytes=64 * 1024, max_message_bytes=64 * 1024)


def check_count(n: int, limits: Limits) -> None:
    """Validate a frame count read from the wire."""
    if n < 1:
        raise RemoteProtocolError("peer sent a message with 0 frames; at least 1 is required")
    if n > limits.max_frames:
        raise RemoteProtocolError(
            f"peer sent a message of {n} frames; the limit is {limits.max_frames} "
            "(Limits.max_frames)"
        )


def check_lengths(lengths, limits: Limits) -> int:
    """Validate frame lengths read from the wire; return their total."""
    total = 0
    for length in lengths:
        if length > limits.max_frame_bytes:
            raise RemoteProtocolError(
                f"peer announced a frame of {length} bytes; the limit is "
                f"{limits.max_frame_bytes} (Limits.max_frame_bytes)"
            )
        total += length
    if total > limits.max_message_bytes:
        raise RemoteProtocolError(
            f"peer announced a message of {total} bytes; the limit is "
            f"{limits.max_message_bytes} (Limits.max_message_bytes)"
        )
    return total


def frame_header(frames) -> bytes:
    """The count-and-lengths prefix for ``frames`` (bytes-like objects)."""
    n = len(frames)
    if n == 0:
        raise LocalProtocolError("cannot send a message with no frames")
    lengths = [memoryview(f).nbytes for f in frames]
    return struct.pack(f"<{n + 1}Q", n, *lengths)


def pack_frames(frames) -> bytes:
    """Header and frames joined into one ``bytes`` (for small messages and tests)."""
    return frame_header(frames) + b"".join(frames)


class Decoder:
    """Incremental frame decoder: feed bytes, get lists of frames.

    >>> d = Decoder()
    >>> data = pack_frames([b"hello", b"world"])
    >>> d.feed(data[:3]) + d.feed(data[3:])
    [[b'hello', b'world']]

    A framing violation raises :class:`RemoteProtocolError`; the decoder is
    then unusable (the stream cannot be resynchronised).
    """

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()
        self._buf = bytearray()
        self._broken: RemoteProtocolError | None = None
        # parse state: expected lengths once the header has been read
        self._count: int | None = None
        self._lengths: tuple[int, ...] | None = None

    @property
    def buffered(self) -> int:
        """Number of bytes received but not yet part of a whole message."""
        return len(self._buf)

    def feed(self, data) -> list[list[bytes]]:
        """Add received bytes; return every message they complete."""
        if self._broken is not None:
            raise self._broken
        self._buf += data
        out = []
        try:
            while True:
                msg = self._next()
                if msg is None:
                    return out
                out.append(msg)
        except RemoteProtocolError as e:
            self._broken = e
            self._buf = bytearray()
            raise

    def _next(self):
        buf = self._buf
        if self._count is None:
            if len(buf) < 8:
                return None
            (n,) = _Q.unpack_from(buf, 0)
            check_count(n, self.limits)
            self._count = n
        n = self._count
        if self._lengths is None:
            if len(buf) < 8 + 8 * n:
                return None
            lengths = struct.unpack_from(f"<{n}Q", buf, 8)
            check_lengths(lengths, self.limits)
            self._lengths = lengths
        start = 8 + 8 * n
        end = start + sum(self._lengths)
        if len(buf) < end:
            return None
        frames = []
        pos = start
        for length in self._lengths:
            frames.append(bytes(buf[pos : pos + length]))
            pos += length
        del buf[:end]
        self._count = None
        self._lengths = None
        return frames
