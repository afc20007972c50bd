"""Message encoding: msgpack with extension types, cloudpickle for the rest.

``dumps(msg)`` returns a list of frames: frame 0 is msgpack, the others are
out-of-band buffers it references. ``loads(frames)`` reverses it. No I/O.

msgpack options are pinned explicitly (``use_bin_type=True``, ``raw=False``,
``strict_map_key=False``), since msgpack 1.0 changed its defaults once
(dask/distributed#3494). Extension types keep Python types exact:

=====  ==========================================================
code   payload
=====  ==========================================================
1      tuple: msgpack array of its items
2      set: msgpack array
3      frozenset: msgpack array
4      pickle: ``[pickle_bytes | frame_index, [buffer frame indices]]``
5      out-of-band bytes-like: ``[frame_index, kind]`` (0 bytes, 1 bytearray)
=====  ==========================================================

Objects msgpack cannot carry (functions, numpy arrays, exceptions, user
classes, ints beyond 64 bits) are pickled with protocol 5; their
``PickleBuffer``\\ s become frames, as do ``bytes``/``memoryview`` values of at
least ``OOB_THRESHOLD`` bytes (and every ``bytearray``, to keep its type), so
large payloads are never copied while sending.
"""

from __future__ import annotations

import pickle

import cloudpickle
import msgpack

from .errors import DecodeError, LocalProtocolError, PythonVersionError

__all__ = ["OOB_THRESHOLD", "dumps", "loads", "pickle_dumps", "pickle_loads"]

OOB_THRESHOLD = 64 * 1024

#: Extension types nest by calling msgpack's unpacker from its own ext hook,
#: and each level costs ~45 KB of C stack: a few hundred levels crash the
#: process (segfault), so a peer could kill a server with one small message.
#: ``loads`` refuses deeper nesting; ``dumps`` pickles what would go deeper
#: (pickle builds nested objects without recursing in C).
MAX_NESTING = 32

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

EXT_TUPLE = 1
EXT_SET = 2
EXT_FROZENSET = 3
EXT_PICKLE = 4
EXT_BUFFER = 5

_KIND_BYTES = 0
_KIND_BYTEARRAY = 1

_ATOMIC = frozenset({str, int, float, bool, type(None)})
_NESTED = {tuple: EXT_TUPLE, set: EXT_SET, frozenset: EXT_FROZENSET}
_ExtType = msgpack.ExtType


def _packb(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True, strict_types=True)


def _by_reference_ok(result: bytes) -> bool:
    """Whether a plain pickle names no module that must go by value.

    That is ``__main__`` and the modules registered with
    ``cloudpickle.register_pickle_by_value`` (and their submodules): a
    worker may not be able to import them. A substring test, like the one
    for ``__main__``: a false match only costs a cloudpickle.
    """
    if b"__main__" in result:
        return False
    registered = cloudpickle.list_registry_pickle_by_value()
    return not registered or not any(name.encode() in result for name in registered)


def pickle_dumps(obj, buffer_callback=None) -> bytes:
    """Pickle with protocol 5: plain pickle when it works, cloudpickle otherwise.

    Objects defined in ``__main__`` (or lambdas, closures) cannot be pickled
    by reference, so they go through cloudpickle, which pickles them by value;
    so do objects that refer to a module registered with
    ``cloudpickle.register_pickle_by_value`` (functions or data, e.g. an
    instance of a class defined there), following cloudpickle's rules.

    .. versionchanged:: 0.2.0
       Modules registered with ``register_pickle_by_value`` go by value.
    """
    buffers = []
    try:
        result = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        if _by_reference_ok(result):
            if buffer_callback is not None:
                for b in buffers:
                    buffer_callback(b)
            return result
    except Exception:
        pass
    return cloudpickle.dumps(obj, protocol=5, buffer_callback=buffer_callback)


def pickle_loads(data, buffers=()):
    """Inverse of :func:`pickle_dumps`."""
    return pickle.loads(data, buffers=buffers)


class _Encoder:
    __slots__ = ("frames", "depth", "refuse_pickle")

    def __init__(self, refuse_pickle=None):
        self.frames = [b""]  # frame 0 filled in at the end
        self.depth = 0  # extension types around the object being encoded
        self.refuse_pickle = refuse_pickle

    def _frame(self, buf) -> int:
        self.frames.append(buf)
        return len(self.frames) - 1

    def enc(self, obj):
        t = type(obj)
        if t in _ATOMIC:
            if t is int and not _INT_MIN <= obj <= _INT_MAX:
                return self.pickled(obj)  # beyond msgpack's 64 bits
            return obj
        if t is dict:
            enc = self.enc
            return {enc(k): enc(v) for k, v in obj.items()}
        if t is list:
            enc = self.enc
            return [enc(x) for x in obj]
        code = _NESTED.get(t)
        if code is not None:
            if self.depth >= MAX_NESTING - 1:
                return self.pickled(obj)
            self.depth += 1
            try:
                return _ExtType(code, _packb([self.enc(x) for x in obj]))
            finally:
                self.depth -= 1
        if t is bytes or t is bytearray or t is memoryview:
            n = obj.nbytes if t is memoryview else len(obj)
            if n < OOB_THRESHOLD and t is not bytearray:  # bytearrays keep their type
                return bytes(obj) if t is memoryview else obj
            if t is memoryview:
                obj = obj.cast("B") if obj.c_contiguous else memoryview(obj.tobytes())
            kind = _KIND_BYTEARRAY if t is bytearray else _KIND_BYTES
            return _ExtType(EXT_BUFFER, _packb([self._frame(obj), kind]))
        return self.pickled(obj)

    def pickled(self, obj):
        if self.refuse_pickle is not None:
            raise PythonVersionError(
                f"cannot send an object of type {type(obj).__module__}."
                f"{type(obj).__qualname__} (it would be pickled): {self.refuse_pickle}"
            )
        buffers = []
        try:
            data = pickle_dumps(obj, buffer_callback=buffers.append)
        except Exception as e:
            raise LocalProtocolError(
                f"cannot serialize object of type {type(obj).__module__}."
                f"{type(obj).__qualname__}: {type(e).__name__}: {e}"
            ) from e
        indices = [self._frame(b.raw()) for b in buffers]
        head = self._frame(data) if len(data) >= OOB_THRESHOLD else data
        return _ExtType(EXT_PICKLE, _packb([head, indices]))


def dumps(msg, *, refuse_pickle: str | None = None) -> list:
    """Encode ``msg`` into frames (frame 0 msgpack, then out-of-band buffers).

    With ``refuse_pickle`` (a reason, e.g. the peer runs another Python
    major.minor), a value that would need pickling raises
    :class:`PythonVersionError` naming the reason.

    .. versionchanged:: 0.2.0
       ``refuse_pickle``.
    """
    if type(msg) is dict:
        # fast path: a flat dict of str/int/float/bool/None (most control
        # messages) is plain msgpack; anything else takes the encoder
        for k, v in msg.items():
            if type(v) not in _ATOMIC or type(k) not in _ATOMIC:
                break
        else:
            try:
                return [_packb(msg)]
            except OverflowError:
                pass  # an int beyond 64 bits: the encoder pickles it
    enc = _Encoder(refuse_pickle)
    try:
        enc.frames[0] = _packb(enc.enc(msg))
    except (ValueError, OverflowError, TypeError, RecursionError) as e:
        # e.g. lists nested deeper than msgpack (or Python) allows
        raise LocalProtocolError(f"cannot encode message: {type(e).__name__}: {e}") from e
    return enc.frames


class _Loader:
    """Decodes one message. A class, not closures: nested closures that refer
    to each other form a reference cycle that kept every received message's
    frames alive until the next full garbage collection."""

    __slots__ = ("frames", "allow_pickle", "depth", "refuse_pickle", "refused")

    def __init__(self, frames, allow_pickle, refuse_pickle=None):
        self.frames = frames
        self.allow_pickle = allow_pickle
        self.depth = 0
        self.refuse_pickle = refuse_pickle
        self.refused = 0  # pickles refused (refuse_pickle)

    def frame(self, i):
        n = len(self.frames)
        if type(i) is not int or not 0 < i < n:
            raise DecodeError(f"message refers to frame {i!r}, but it has {n} frames")
        return self.frames[i]

    def unpack(self, data):
        return msgpack.unpackb(
            data, ext_hook=self.hook, raw=False, strict_map_key=False, use_list=True
        )

    def hook(self, code, data):
        if self.depth >= MAX_NESTING:
            raise DecodeError(
                f"message has extension types nested more than {MAX_NESTING} deep; refusing it"
            )
        self.depth += 1
        try:
            return self.decode_ext(code, data)
        finally:
            self.depth -= 1

    def decode_ext(self, code, data):
        if code == EXT_TUPLE:
            return tuple(self.unpack(data))
        if code == EXT_BUFFER:
            index, kind = self.unpack(data)
            buf = self.frame(index)
            if kind == _KIND_BYTEARRAY:
                return buf if type(buf) is bytearray else bytearray(buf)
            return buf if type(buf) is bytes else bytes(buf)
        if code == EXT_SET:
            return set(self.unpack(data))
        if code == EXT_FROZENSET:
            return frozenset(self.unpack(data))
        if code == EXT_PICKLE:
            if not self.allow_pickle:
                raise DecodeError(
                    "peer sent a pickled object on a connection that is not "
                    "authenticated; refusing to unpickle it"
                )
            if self.refuse_pickle is not None:
                # refused unread: nothing is unpickled; decoding goes on so
                # that a server can still see the op and whether to reply
                self.refused += 1
                return None
            head, indices = self.unpack(data)
            if type(head) is int:
                head = self.frame(head)
            return pickle_loads(head, buffers=[_writable(self.frame(i)) for i in indices])
        raise DecodeError(f"unknown msgpack extension type {code}")


def _writable(buf):
    """A pickle buffer the unpickled object may write to, as any scheduler gives it.

    Frames of at most ``OOB_THRESHOLD`` bytes arrive inside one small
    message, as slices of an immutable ``bytes`` (a numpy array built on one
    would be read-only); those are copied into a ``bytearray`` (cheap: small).
    Larger frames are received into fresh writable buffers and are never copied.
    """
    if type(buf) is bytes:
        if len(buf) <= OOB_THRESHOLD:
            return bytearray(buf)
    elif type(buf) is memoryview and buf.readonly and buf.nbytes <= OOB_THRESHOLD:
        return bytearray(buf)
    return buf


def frame_kinds(head) -> dict:
    """``{frame index: 0 (bytes) or 1 (bytearray)}`` for the out-of-band
    ``bytes``/``bytearray`` values that frame 0 ``head`` refers to, so that a
    reader can receive those frames straight into the right type. Other frames
    (pickle buffers) are absent. Best effort: malformed input gives ``{}``
    (``loads`` then reports it properly)."""
    kinds = {}
    depth = [0]

    def hook(code, data):
        if code == EXT_BUFFER:
            index, kind = msgpack.unpackb(data)
            if type(index) is int and kind in (_KIND_BYTES, _KIND_BYTEARRAY):
                kinds[index] = kind
        elif code in (EXT_TUPLE, EXT_SET, EXT_FROZENSET) and depth[0] < MAX_NESTING:
            depth[0] += 1
            msgpack.unpackb(data, ext_hook=hook, raw=False, strict_map_key=False)
            depth[0] -= 1

    try:
        msgpack.unpackb(head, ext_hook=hook, raw=False, strict_map_key=False)
    except Exception:
        return {}
    return kinds


def loads(frames, allow_pickle: bool = True, *, refuse_pickle: str | None = None):
    """Decode frames produced by :func:`dumps`.

    With ``allow_pickle=False`` (unauthenticated peers, handshakes) a pickled
    value raises :class:`DecodeError` instead of being unpickled. With
    ``refuse_pickle`` (a reason: the peer runs another Python major.minor),
    a message holding pickles raises :class:`PythonVersionError` naming
    the reason; nothing is unpickled, and the error's ``partial`` is the
    message with ``None`` for each pickle.
    Any malformed content raises :class:`DecodeError`.

    .. versionchanged:: 0.2.0
       ``refuse_pickle``.
    """
    loader = _Loader(frames, allow_pickle, refuse_pickle)
    try:
        msg = loader.unpack(frames[0])
        if loader.refused:
            raise PythonVersionError(
                f"refused a message holding {loader.refused} pickled value(s), "
                f"nothing was unpickled: {refuse_pickle}",
                partial=msg,
            )
        return msg
    except DecodeError:
        raise
    except Exception as e:
        # msgpack raises ExtraData/FormatError/StackError/ValueError/..., and
        # unpickling can raise anything (a missing module, a bad reducer).
        raise DecodeError(f"could not decode message: {type(e).__name__}: {e}") from None
    finally:
        loader.frames = None
