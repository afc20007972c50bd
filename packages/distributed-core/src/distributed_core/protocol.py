"""Length-prefixed framing, free of I/O.

A message on the wire is::

    <Q n            number of frames (n >= 1)
    <Q len_0 ... len_{n-1}
    frame_0 ... frame_{n-1}

Frame 0 is the msgpack-encoded message; frames 1..n-1 are out-of-band
buffers it refers to (see :mod:`distributed_core.serialize`). All integers
are little-endian unsigned 64-bit, whatever the machine.

Every length is checked against :class:`Limits` *before* anything is
allocated for it. :class:`Decoder` is the one parser: it turns bytes, in
any chunking, into lists of frames, and the I/O layer
(:mod:`distributed_core.comm`) drives the same decoder, receiving large
frames straight into preallocated buffers.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "SMALL",
    "Decoder",
    "Limits",
    "check_count",
    "check_lengths",
    "frame_header",
    "pack_frames",
]

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


#: Frames up to this size are received into tornado's buffer; larger ones
#: straight into a preallocated buffer (see :meth:`Decoder.receive_frame`).
SMALL = 64 * 1024

_16 = struct.Struct("<QQ")

# Decoder states: what the next bytes are
HEAD = 0  # frame count and first length (16 bytes)
LENGTHS = 1  # the other frames' lengths
BODY = 2  # every frame of a message of at most SMALL bytes, in one piece
FRAME = 3  # one frame of at most SMALL bytes of a larger message
LARGE = 4  # one frame of more than SMALL bytes: receive it in place


class Decoder:
    """Incremental frame decoder: the one parser of the wire format.

    Two ways to drive it, over the same state machine:

    *Push* (sans-I/O, any chunking): ``feed(data)`` returns every message
    the bytes complete.

    >>> d = Decoder()
    >>> data = pack_frames([b"hello", b"world"])
    >>> d.feed(data[:3]) + d.feed(data[3:])
    [[b'hello', b'world']]

    *Pull* (what :mod:`distributed_core.comm` does on a socket): read
    ``d.wanted`` bytes (fewer are fine; in state :data:`HEAD` read them
    with ``partial=True``, so that a bad frame count is refused as soon as
    its 8 bytes arrive) and pass them to ``d.receive(data)``, until it
    returns the message's frames. In state :data:`LARGE` the next frame is
    larger than :data:`SMALL`: receive its ``d.wanted`` bytes straight
    into a buffer of your choice and hand it over with
    ``d.receive_frame(buf)`` (no copy). ``d.frames`` holds the frames of
    the current message received so far.

    Every count and length is checked against :class:`Limits` before
    anything is sized from it. A framing violation raises
    :class:`RemoteProtocolError`; the decoder is then unusable (the stream
    cannot be resynchronised).

    .. versionchanged:: 0.2.0
       The production read path uses this class (``receive`` and
       ``receive_frame``); a frame count over the limit is refused once its
       8 bytes have arrived.
    """

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()
        self._buf = bytearray()  # a partly received step
        self._broken: RemoteProtocolError | None = None
        self._received = 0  # bytes of the current message before this step
        self.state = HEAD
        self.wanted = 16  # bytes the current step still needs
        self.frames: list = []  # frames of the current message so far
        self._lengths: tuple[int, ...] = ()
        self._single = False  # the current message is one frame in state BODY

    @property
    def limits(self) -> Limits:
        return self._limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self._limits = limits
        # a one-frame message this small takes the fast path in receive()
        self._small = min(SMALL, limits.max_frame_bytes, limits.max_message_bytes)

    @property
    def buffered(self) -> int:
        """Number of bytes received but not yet part of a whole message."""
        return self._received + len(self._buf)

    def _done(self) -> list:
        frames = self.frames
        self.frames = []
        self.state = HEAD
        self.wanted = 16
        self._received = 0
        return frames

    def feed(self, data) -> list[list[bytes]]:
        """Add received bytes; return every message they complete."""
        view = memoryview(data).cast("B")
        out = []
        pos, end = 0, len(view)
        while pos < end:
            take = min(self.wanted, end - pos)
            msg = self.receive(bytes(view[pos : pos + take]))
            pos += take
            if msg is not None:
                out.append([bytes(f) for f in msg])
        if self._broken is not None:
            raise self._broken
        return out

    def receive(self, data):
        """Take the next ``len(data) <= self.wanted`` bytes of the stream.

        Returns the message's list of frames once it is complete, else
        ``None``. Raises :class:`RemoteProtocolError` on a framing
        violation (and on every call after one).
        """
        n = len(data)
        if n == self.wanted and not self._buf:  # never true once broken (wanted -1)
            state = self.state
            if state == BODY and self._single:
                # fast path, second half: the body of a one-frame message
                self.state = HEAD
                self.wanted = 16
                self._received = 0
                return [data]
            if state == HEAD:
                # fast path, first half: a small one-frame message
                count, first = _16.unpack(data)
                if count == 1 and first <= self._small:
                    if first == 0:
                        return [b""]
                    self._single = True
                    self._received = 16
                    self.state = BODY
                    self.wanted = first
                    return None
        if self._broken is not None:
            raise self._broken
        try:
            if n != self.wanted or self._buf:
                if n > self.wanted:
                    raise ValueError(f"receive() got {n} bytes; only {self.wanted} were wanted")
                self._buf += data
                self.wanted -= n
                if self.wanted:
                    if self.state == HEAD and len(self._buf) >= 8:
                        # refuse a bad count now, not when the rest arrives
                        check_count(_Q.unpack_from(self._buf)[0], self._limits)
                    return None
                data = bytes(self._buf)
                self._buf = bytearray()
            return self._step(data)
        except RemoteProtocolError as e:
            self._broken = e
            self.wanted = -1  # keeps receive() off its fast path
            self._buf = bytearray()
            self.frames = []
            self._received = 0
            raise

    def receive_frame(self, buf):
        """Hand over the frame of state :data:`LARGE`, received into ``buf``."""
        if self.state != LARGE or self._buf or memoryview(buf).nbytes != self.wanted:
            raise ValueError(
                f"receive_frame() expects a frame of {self.wanted} bytes in state LARGE"
            )
        self._received += self.wanted
        self.frames.append(buf)
        return self._next_frame()

    def _step(self, data):
        """``data`` is exactly the bytes of the current step."""
        state = self.state
        self._received += len(data)
        if state == HEAD:
            count, first = _16.unpack(data)
            check_count(count, self._limits)
            if count == 1:
                return self._plan((first,))
            self._lengths = (first,)
            self.state = LENGTHS
            self.wanted = 8 * (count - 1)
            return None
        if state == LENGTHS:
            return self._plan(self._lengths + struct.unpack(f"<{len(data) // 8}Q", data))
        if state == BODY:
            if self._single:  # set by receive()'s fast path, without _lengths
                self.frames.append(data)
                return self._done()
            frames, pos = self.frames, 0
            for length in self._lengths:
                frames.append(data[pos : pos + length])
                pos += length
            return self._done()
        # FRAME, or LARGE fed through receive()
        self.frames.append(data)
        return self._next_frame()

    def _plan(self, lengths):
        total = check_lengths(lengths, self._limits)
        self._lengths = lengths
        self._single = False
        if total <= SMALL:
            if total == 0:
                self.frames.extend(b"" for _ in lengths)
                return self._done()
            self.state = BODY
            self.wanted = total
            return None
        return self._next_frame()

    def _next_frame(self):
        lengths, frames = self._lengths, self.frames
        while len(frames) < len(lengths):
            length = lengths[len(frames)]
            if length == 0:
                frames.append(b"")
                continue
            self.state = LARGE if length > SMALL else FRAME
            self.wanted = length
            return None
        return self._done()
