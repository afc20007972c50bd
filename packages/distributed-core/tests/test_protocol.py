"""Framing without I/O: the Decoder fed bytes in every chunking, and its limits."""

from __future__ import annotations

import random
import struct
import tracemalloc

import pytest

from distributed_core import Decoder, Limits, LocalProtocolError, RemoteProtocolError
from distributed_core.protocol import (
    SMALL,
    check_count,
    check_lengths,
    frame_header,
    pack_frames,
)

MESSAGES = [
    [b"hello"],
    [b"", b""],
    [b"x" * 1000, b"", b"yz"],
    [bytes(range(256)) * 3],
    [b"a", b"b", b"c", b"d", b"e"],
]


def feed_all(decoder: Decoder, data: bytes, cuts) -> list:
    out, pos = [], 0
    for cut in [*cuts, len(data)]:
        out += decoder.feed(data[pos:cut])
        pos = cut
    return out


def test_header_layout_is_little_endian_q():
    frames = [b"abc", b"", b"x" * 258]
    head = frame_header(frames)
    assert head == (
        b"\x03\x00\x00\x00\x00\x00\x00\x00"
        b"\x03\x00\x00\x00\x00\x00\x00\x00"
        b"\x00\x00\x00\x00\x00\x00\x00\x00"
        b"\x02\x01\x00\x00\x00\x00\x00\x00"
    )
    assert head == struct.pack("<QQQQ", 3, 3, 0, 258)
    assert pack_frames(frames) == head + b"abc" + b"x" * 258


def test_header_accepts_any_bytes_like():
    frames = [bytearray(b"ab"), memoryview(b"cde"), b"f"]
    assert pack_frames(frames) == struct.pack("<4Q", 3, 2, 3, 1) + b"abcdef"
    # a multi-byte memoryview counts bytes, not items
    mv = memoryview(struct.pack("<4I", 1, 2, 3, 4)).cast("I")
    assert frame_header([mv]) == struct.pack("<QQ", 1, 16)


def test_header_refuses_no_frames():
    with pytest.raises(LocalProtocolError, match="no frames"):
        frame_header([])


@pytest.mark.parametrize("frames", MESSAGES, ids=range(len(MESSAGES)))
def test_whole(frames):
    d = Decoder()
    assert d.feed(pack_frames(frames)) == [frames]
    assert d.buffered == 0


@pytest.mark.parametrize("frames", MESSAGES, ids=range(len(MESSAGES)))
def test_byte_by_byte(frames):
    data = pack_frames(frames)
    d = Decoder()
    out = []
    for i in range(len(data)):
        got = d.feed(data[i : i + 1])
        if i < len(data) - 1:
            assert got == []
            assert d.buffered == i + 1
        out += got
    assert out == [frames]
    assert d.buffered == 0


@pytest.mark.parametrize("seed", range(20))
def test_random_chunkings_of_back_to_back_messages(seed):
    rng = random.Random(seed)
    msgs = [rng.choice(MESSAGES) for _ in range(rng.randint(1, 6))]
    data = b"".join(pack_frames(m) for m in msgs)
    cuts = sorted(rng.sample(range(len(data)), min(len(data), rng.randint(0, 30))))
    assert feed_all(Decoder(), data, cuts) == msgs


def test_several_messages_in_one_feed():
    data = b"".join(pack_frames(m) for m in MESSAGES)
    assert Decoder().feed(data) == MESSAGES


def test_empty_feed():
    d = Decoder()
    assert d.feed(b"") == []
    assert d.feed(bytearray()) == []
    assert d.feed(memoryview(pack_frames([b"a"]))) == [[b"a"]]


def test_trailing_partial_message_stays_buffered():
    tail = pack_frames([b"next"])[:11]
    d = Decoder()
    assert d.feed(pack_frames([b"one"]) + tail) == [[b"one"]]
    assert d.buffered == len(tail)
    assert d.feed(pack_frames([b"next"])[11:]) == [[b"next"]]
    assert d.buffered == 0


def test_trailing_garbage_breaks_the_decoder_for_good():
    d = Decoder()
    assert d.feed(pack_frames([b"ok"])) == [[b"ok"]]
    garbage = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"
    with pytest.raises(RemoteProtocolError, match="frames; the limit is"):
        d.feed(garbage)
    assert d.buffered == 0  # nothing kept from a broken stream
    # the stream cannot be resynchronised: even valid bytes are refused now
    with pytest.raises(RemoteProtocolError):
        d.feed(pack_frames([b"ok"]))


def test_garbage_in_the_same_feed_as_a_valid_message():
    # The whole feed() raises; the connection is closed anyway after a
    # framing violation, so the message before the garbage is not delivered.
    d = Decoder()
    with pytest.raises(RemoteProtocolError):
        d.feed(pack_frames([b"ok"]) + b"\xff" * 16)


def header(count, *lengths):
    return struct.pack(f"<{len(lengths) + 1}Q", count, *lengths)


BIG = 2**30  # larger than anything the limits below allow


@pytest.mark.parametrize(
    "data, limits, match",
    [
        pytest.param(header(2**40), Limits(), "message of 1099511627776 frames", id="count-2**40"),
        pytest.param(header(2**64 - 1), Limits(), "frames; the limit", id="count-2**64-1"),
        pytest.param(header(0) + b"\0" * 64, Limits(), "0 frames", id="count-0"),
        pytest.param(
            header(1, 2**63), Limits(), "frame of 9223372036854775808 bytes", id="len-2**63"
        ),
        pytest.param(
            header(2, 0, 2**64 - 1), Limits(), "frame of 18446744073709551615", id="len-max"
        ),
        pytest.param(
            header(3, BIG // 2, BIG // 2, 1),
            Limits(max_frame_bytes=BIG, max_message_bytes=BIG),
            "message of 1073741825 bytes",
            id="total-over-max-message",
        ),
        pytest.param(
            header(5, 1, 1, 1, 1, 1),
            Limits(max_frames=4),
            "message of 5 frames; the limit is 4",
            id="count-over-max-frames",
        ),
        pytest.param(
            header(1, 65537),
            Limits.handshake(),
            "frame of 65537 bytes; the limit is 65536",
            id="handshake-limits",
        ),
    ],
)
def test_limits_checked_before_allocating(data, limits, match):
    d = Decoder(limits)
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError, match=match) as info:
            # the header arrives byte by byte: nothing may be sized from a partial one
            for i in range(len(data)):
                d.feed(data[i : i + 1])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, f"decoder allocated {peak} bytes before refusing"
    assert "Limits." in str(info.value) or "0 frames" in str(info.value)


def test_limit_is_inclusive():
    limits = Limits(max_frames=2, max_frame_bytes=3, max_message_bytes=5)
    assert Decoder(limits).feed(pack_frames([b"abc", b"de"])) == [[b"abc", b"de"]]
    with pytest.raises(RemoteProtocolError):
        Decoder(limits).feed(pack_frames([b"abc", b"def"]))


def test_check_helpers():
    limits = Limits(max_frames=3, max_frame_bytes=10, max_message_bytes=15)
    check_count(3, limits)
    assert check_lengths([10, 5], limits) == 15
    with pytest.raises(RemoteProtocolError, match="max_frame_bytes"):
        check_lengths([11], limits)
    with pytest.raises(RemoteProtocolError, match="max_message_bytes"):
        check_lengths([10, 6], limits)


def test_handshake_limits_are_small():
    small = Limits.handshake()
    assert small.max_frames <= 4
    assert small.max_message_bytes <= 64 * 1024
    assert Limits().max_message_bytes > small.max_message_bytes


# -- pull mode: what comm.read_frames drives on a socket ----------------------


def pull(decoder: Decoder, data: bytes, large=bytearray):
    """Drive ``decoder`` as the I/O layer does: read what it wants, large frames in place."""
    from distributed_core.protocol import LARGE

    out, pos = [], 0
    while pos < len(data):
        n = decoder.wanted
        if decoder.state == LARGE:
            buf = large(data[pos : pos + n])
            msg = decoder.receive_frame(buf)
        else:
            msg = decoder.receive(data[pos : pos + n])
        pos += n
        if msg is not None:
            out.append(msg)
    return out


PULL_MESSAGES = [
    *MESSAGES,
    [b"head", b"L" * (SMALL + 1), b"", b"s" * 100, b"M" * (3 * SMALL)],
    [b"x" * (SMALL + 5)],
    [b"x" * SMALL],
]


@pytest.mark.parametrize("frames", PULL_MESSAGES, ids=range(len(PULL_MESSAGES)))
def test_pull_mode_gives_the_same_frames_as_feed(frames):
    data = pack_frames(frames)
    assert pull(Decoder(), data) == [frames]
    assert Decoder().feed(data) == [frames]


def test_pull_mode_hands_large_frames_over_without_copying():
    from distributed_core.protocol import LARGE

    big = bytearray(b"B" * (SMALL + 1))
    data = pack_frames([b"head", big])
    d = Decoder()
    assert d.receive(data[:16]) is None
    assert d.receive(data[16:24]) is None  # the second length
    assert d.receive(data[24:28]) is None  # frame 0 (small)
    assert d.state == LARGE and d.wanted == len(big) and d.frames == [b"head"]
    msg = d.receive_frame(big)
    assert msg[1] is big  # the very buffer the I/O layer filled
    assert d.buffered == 0 and d.wanted == 16


def test_pull_mode_refuses_a_wrong_sized_buffer():
    d = Decoder()
    with pytest.raises(ValueError, match="expects a frame"):
        d.receive_frame(bytearray(10))
    with pytest.raises(ValueError, match="only 16 were wanted"):
        d.receive(b"\0" * 17)


@pytest.mark.parametrize("count", [2**40, 0, 5])
def test_count_over_the_limit_is_refused_at_8_bytes(count):
    # the connection must close as soon as the count arrives, not wait for
    # the 16-byte header (or a handshake deadline)
    d = Decoder(Limits(max_frames=4))
    with pytest.raises(RemoteProtocolError, match="frames"):
        d.receive(struct.pack("<Q", count))
    with pytest.raises(RemoteProtocolError):
        d.receive(b"\0" * 8)


def test_limits_can_change_between_messages():
    d = Decoder()
    assert d.feed(pack_frames([b"x" * 70_000])) == [[b"x" * 70_000]]
    d.limits = Limits.handshake()
    with pytest.raises(RemoteProtocolError, match="Limits.max_frame_bytes"):
        d.feed(pack_frames([b"x" * 70_000]))
