"""The golden protocol vectors: one Python value per message shape.

This module is plain data plus :func:`describe`. ``generate.py`` encodes
every value with ``pack_frames(dumps(value))`` into ``v<major>.<minor>/``;
``tests/test_golden.py`` checks the committed bytes against these values in
both directions. It imports nothing from ``distributed_core`` on purpose: the
values are what the protocol *is*, not what the code happens to produce.

Rules for the values (so that the bytes are the same on every machine and on
every Python 3.10-3.13):

* no ``str`` in sets or frozensets (string hashes are randomised per process,
  which would change the iteration order and so the encoded bytes);
* pickled values only of types whose protocol-5 pickle was checked to be
  identical on CPython 3.10, 3.11, 3.12 and 3.13 (``complex``, ints beyond
  64 bits, ``datetime``, builtins pickled by reference, ``PickleBuffer``,
  nested tuples).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import pickle
from typing import Any, NamedTuple

__all__ = ["NONCE_A", "NONCE_B", "PROOF", "SECRET", "VECTORS", "Vector", "describe"]


class Vector(NamedTuple):
    name: str
    value: Any
    doc: str
    #: what decoding gives back when it is not ``value`` itself (memoryview
    #: and PickleBuffer arrive as bytes)
    decoded: Any = None
    has_decoded: bool = False


def _v(name, value, doc, **kw):
    if "decoded" in kw:
        return Vector(name, value, doc, kw["decoded"], True)
    return Vector(name, value, doc)


# -- fixed inputs -------------------------------------------------------------

NONCE_A = bytes(range(32))  # the connector's nonce
NONCE_B = bytes(range(32, 64))  # the listener's nonce
SECRET = b"golden-secret"
#: Security(secret=SECRET).proof("connector", NONCE_A, NONCE_B): HMAC-SHA256 of
#: b"distributed-auth-v1|connector|" + NONCE_B + b"|" + NONCE_A
PROOF = bytes.fromhex("965bbfc3c22bbccc57465d630a162a873cae0dd9e57ecc6c353291ecca5a5d18")
#: pickle.dumps(ValueError("boom"), protocol=5), identical on CPython 3.10-3.13
VALUEERROR_PICKLE = bytes.fromhex(
    "80059526000000000000008c086275696c74696e73948c0a56616c75654572726f72"
    "9493948c04626f6f6d94859452942e"
)
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/tasks.py", line 3, in inc\n'
    '    raise ValueError("boom")\n'
    "ValueError: boom\n"
)

OOB = 64 * 1024  # serialize.OOB_THRESHOLD
#: 64 KiB exactly: the smallest bytes value that travels out of band
LARGE = bytes(range(256)) * (OOB // 256)
#: one byte less: the largest bytes value that travels inline
LARGE_INLINE = bytes(range(255, -1, -1)) * (OOB // 256 - 1) + bytes(range(255))
#: an int whose pickle is larger than 64 KiB, so the pickle travels in its own frame
HUGE_INT = 1 << (8 * OOB)

W1 = "tcp://127.0.0.1:40001"
W2 = "tcp://127.0.0.1:40002"


def _nested_tuple(depth: int):
    value = (1,)
    for _ in range(depth - 1):
        value = (value,)
    return value


# -- the vectors ----------------------------------------------------------------

VECTORS = [
    # handshake (msgpack only: must decode with allow_pickle=False, within Limits.handshake())
    _v(
        "hello_connector",
        {
            "distributed": "hello",
            "protocol": [1, 0],
            "package": "distributed-core",
            "version": "0.1.0",
            "python": "3.11.7",
            "role": "connector",
            "name": "client-1",
            "auth": False,
            "nonce": NONCE_A,
        },
        "the connecting side's hello, no shared secret",
    ),
    _v(
        "hello_listener_auth",
        {
            "distributed": "hello",
            "protocol": [1, 0],
            "package": "distributed-core",
            "version": "0.1.0",
            "python": "3.13.0",
            "role": "listener",
            "name": None,
            "auth": True,
            "nonce": NONCE_B,
        },
        "the listening side's hello, with a shared secret configured",
    ),
    _v(
        "auth_proof",
        {"proof": PROOF},
        "the connector's proof of the secret b'golden-secret' for nonces NONCE_A (own), NONCE_B",
    ),
    # requests
    _v("request_ping", {"op": "ping", "reply": True}, "the simplest request"),
    _v("request_close", {"op": "close", "reply": True}, "close this connection"),
    _v(
        "request_unknown_op",
        {"op": "no-such-op", "reply": True, "x": 1},
        "a request no server knows (answered with an error reply)",
    ),
    _v(
        "request_compute",
        {
            "op": "compute",
            "reply": True,
            "function": sum,
            "key": ("sum-3f2a", 0),
            "args": ([("x", 0), ("x", 1)],),
            "kwargs": None,
            "needed": [("x", 0), ("x", 1)],
            "who_has": {("x", 0): [W1], ("x", 1): [W2]},
            "report": True,
        },
        "worker compute: tuple keys, a tuple of args, a function pickled by reference",
    ),
    _v(
        "request_update_data_large",
        {
            "op": "update_data",
            "reply": True,
            "data": {("x", 0): LARGE, "small": b"abc"},
            "report": True,
        },
        "worker update_data: a 64 KiB bytes value in its own frame, a small one inline",
    ),
    _v(
        "request_update_data_bytearray",
        {"op": "update_data", "reply": True, "data": {"buf": bytearray(b"hello")}, "report": False},
        "worker update_data with a small bytearray (always out of band, to keep its type)",
    ),
    _v(
        "request_get_data",
        {"op": "get_data", "reply": True, "keys": [("x", 0), "y", b"z", 7], "allow_missing": True},
        "worker get_data with keys of several types",
    ),
    _v(
        "stream_register",
        {
            "op": "register",
            "reply": False,
            "stream": True,
            "address": W1,
            "keys": [("x", 0), "y"],
            "ncores": 2,
            "name": "worker-1",
            "nbytes": {("x", 0): 28, "y": 65536},
        },
        "first message of a worker's report stream to the center",
    ),
    _v(
        "stream_add_keys",
        {"op": "add_keys", "keys": [("x", 1)], "nbytes": {("x", 1): 28}},
        "a later message on the report stream (no reply)",
    ),
    # replies
    _v("reply_ok", {"status": "OK", "result": "OK"}, "the most common reply"),
    _v("reply_ok_pong", {"status": "OK", "result": "pong"}, "the reply to ping"),
    _v(
        "reply_ok_compute",
        {
            "status": "OK",
            "result": {"status": "OK", "key": ("sum-3f2a", 0), "nbytes": 28, "type": "int"},
        },
        "the reply to compute",
    ),
    _v(
        "reply_register",
        {"status": "OK", "heartbeat_interval": 0.5},
        "the center's one answer on a report stream",
    ),
    _v(
        "reply_error",
        {"status": "error", "type": "ValueError", "message": "boom", "traceback": TRACEBACK},
        "an error reply without the pickled exception",
    ),
    _v(
        "reply_error_with_exception",
        {
            "status": "error",
            "type": "ValueError",
            "message": "boom",
            "traceback": TRACEBACK,
            "exception": VALUEERROR_PICKLE,
        },
        "an error reply with the exception pickled (as CPython 3.10-3.13 pickle it)",
    ),
    # msgpack types, every width
    _v(
        "scalars",
        [
            None,
            True,
            False,
            0,
            1,
            -1,
            127,
            128,
            255,
            256,
            65535,
            65536,
            -32,
            -33,
            -128,
            -129,
            2**31,
            2**32,
            2**63,
            2**64 - 1,
            -(2**63),
            1.5,
            -0.0,
            float("inf"),
            float("nan"),
            "",
            "héllo ✓",
            "s" * 32,
            b"",
            b"\x00\xff",
        ],
        "msgpack scalars at each encoding width boundary",
    ),
    _v(
        "empty_containers",
        {"list": [], "dict": {}, "tuple": (), "set": set(), "frozenset": frozenset()},
        "empty list, map and every empty extension container",
    ),
    _v(
        "bytes_inline_max",
        {"data": LARGE_INLINE},
        "64 KiB - 1 bytes: the largest value sent inline",
    ),
    # extension types
    _v("ext_tuple", (1, "a", b"b", None, 2.5, True, [3]), "extension 1: tuple"),
    _v(
        "ext_tuple_nested",
        ((1, (2, (3, ()))), [(4,), ((),)]),
        "extension 1 nested in itself and in lists",
    ),
    _v("ext_set", {3, 1, 2}, "extension 2: set (of ints: deterministic order)"),
    _v(
        "ext_frozenset",
        [frozenset({-1, 0, 1}), {frozenset({1, 2}), 3}],
        "extension 3: frozenset, also as a member of a set",
    ),
    _v(
        "ext_dict_tuple_keys",
        {("x", 0): "a", ("y", 1, 2): [1], ((), 3): None},
        "maps with tuple keys (dask keys)",
    ),
    _v(
        "ext_dict_int_keys",
        {0: "zero", -1: "minus one", 2**40: "big", 2**64 - 1: "max"},
        "maps with int keys",
    ),
    _v("ext_dict_bytes_keys", {b"k": 1, b"\x00\xff": 2}, "maps with bytes keys"),
    _v(
        "ext_dict_mixed_keys",
        {None: 1, True: 2, 1.5: 3, frozenset({1}): 4, "s": 5},
        "maps with None, bool, float, frozenset and str keys",
    ),
    _v(
        "ext_bytes_oob",
        [LARGE, b"inline", bytearray(b"x")],
        "extension 5: two out-of-band frames (bytes, then a bytearray)",
    ),
    _v(
        "ext_bytearray",
        [bytearray(b"abc"), bytearray()],
        "extension 5, kind 1: bytearrays, including an empty one (a 0-byte frame)",
    ),
    _v(
        "ext_memoryview",
        {"view": memoryview(b"xyz")},
        "a small memoryview is sent as inline bytes (and arrives as bytes)",
        decoded={"view": b"xyz"},
    ),
    _v("ext_pickle_complex", complex(1, 2), "extension 4: a pickled builtin"),
    _v(
        "ext_pickle_bigint",
        [2**64, -(2**63) - 1, 2**70],
        "extension 4: ints beyond msgpack's 64 bits are pickled",
    ),
    _v(
        "ext_pickle_datetime",
        datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
        "extension 4: a pickled stdlib object",
    ),
    _v("ext_pickle_function", sum, "extension 4: a function pickled by reference"),
    _v(
        "ext_pickle_large_head",
        HUGE_INT,
        "extension 4 whose pickle is >= 64 KiB: the pickle travels as frame 1",
    ),
    _v(
        "ext_pickle_buffer",
        pickle.PickleBuffer(b"abc"),
        "extension 4 with a protocol-5 out-of-band buffer (arrives as its bytes, read-only)",
        decoded=b"abc",
    ),
    _v(
        "ext_deep_nesting",
        _nested_tuple(33),
        "tuples nested deeper than MAX_NESTING (32): the innermost levels are pickled",
    ),
]


# -- describe ------------------------------------------------------------------


def _sha(data) -> str:
    return hashlib.sha256(data).hexdigest()


def _int_fits(x: int) -> bool:
    return -(2**63) <= x <= 2**64 - 1


def describe(value):
    """A JSON-able, type-exact description of ``value`` (stored in vectors.json).

    Two values have the same description only if they have the same types
    throughout (tuple vs list, bytes vs bytearray, int vs float vs bool, set
    vs frozenset) and the same contents. Large bytes and ints are described
    by their length and SHA-256 instead of in full. Tags:

    ``$tuple``, ``$set``, ``$frozenset`` (items, sets sorted), ``$map``
    (``[key, value]`` pairs, for maps whose keys are not all plain strings),
    ``$bytes``/``$bytearray`` (hex, or ``{length, sha256}``), ``$int`` (beyond
    64 bits: decimal, or ``{sign, bits, sha256_of_hex}`` beyond 256 bits), ``$float``
    (repr), ``$complex``, ``$datetime`` (ISO 8601), ``$global`` (module.name).
    """
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        if _int_fits(value):
            return value
        if value.bit_length() <= 256:
            return {"$int": str(value)}
        return {
            "$int": {
                "sign": -1 if value < 0 else 1,
                "bits": value.bit_length(),
                "sha256_of_hex": _sha(format(abs(value), "x").encode()),
            }
        }
    if t is float:
        return {"$float": repr(value)}
    if t is complex:
        return {"$complex": [repr(value.real), repr(value.imag)]}
    if t is memoryview and value.readonly:
        # a read-only pickle buffer: pickle hands it back read-only (as a view of
        # the received frame); its content is what the format fixes
        value, t = value.tobytes(), bytes
    if t is bytes or t is bytearray:
        tag = "$bytes" if t is bytes else "$bytearray"
        if len(value) <= 64:
            return {tag: value.hex()}
        return {tag: {"length": len(value), "sha256": _sha(value)}}
    if t is list:
        return [describe(x) for x in value]
    if t is tuple:
        return {"$tuple": [describe(x) for x in value]}
    if t is set or t is frozenset:
        items = sorted((describe(x) for x in value), key=lambda d: json.dumps(d, sort_keys=True))
        return {"$set" if t is set else "$frozenset": items}
    if t is dict:
        if all(type(k) is str and not k.startswith("$") for k in value):
            return {k: describe(v) for k, v in value.items()}
        return {"$map": [[describe(k), describe(v)] for k, v in value.items()]}
    if t is datetime.datetime:
        return {"$datetime": value.isoformat()}
    if t is type(sum):  # builtin functions, pickled by reference
        return {"$global": f"{value.__module__}.{value.__qualname__}"}
    raise TypeError(f"describe() does not know how to describe a {t.__module__}.{t.__qualname__}")
