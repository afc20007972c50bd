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
classes) are pickled with protocol 5; their ``PickleBuffer``\\ s become frames,
as do ``bytes``/``bytearray``/``memoryview`` values of at least
``OOB_THRESHOLD`` bytes, so large payloads are never copied while sending.
"""

from __future__ import annotations

import pickle

import cloudpickle
import msgpack

from .errors import DecodeError, LocalProtocolError

__all__ = ["OOB_THRESHOLD", "dumps", "loads", "pickle_dumps", "pickle_loads"]

OOB_THRESHOLD = 64 * 1024

EXT_TUPLE = 1
EXT_SET = 2
EXT_FROZENSET = 3
EXT_PICKLE = 4
EXT_BUFFER = 5

_KIND_BYTES = 0
_KIND_BYTEARRAY = 1

_ATOMIC = frozenset({str, int, float, bool, type(None)})
_ExtType = msgpack.ExtType


def _packb(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True, strict_types=True)


def pickle_dumps(obj, buffer_callback=None) -> bytes:
    """Pickle with protocol 5: plain pickle when it works, cloudpickle otherwise.

    Objects defined in ``__main__`` (or lambdas, closures) cannot be pickled
    by reference, so they go through cloudpickle, which pickles them by value.
    """
    buffers = []
    try:
        result = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        if b"__main__" not in result:
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
    __slots__ = ("frames",)

    def __init__(self):
        self.frames = [b""]  # frame 0 filled in at the end

    def _frame(self, buf) -> int:
        self.frames.append(buf)
        return len(self.frames) - 1

    def enc(self, obj):
        t = type(obj)
        if t in _ATOMIC:
            return obj
        if t is dict:
            enc = self.enc
            return {enc(k): enc(v) for k, v in obj.items()}
        if t is list:
            enc = self.enc
            return [enc(x) for x in obj]
        if t is tuple:
            return _ExtType(EXT_TUPLE, _packb([self.enc(x) for x in obj]))
        if t is bytes or t is bytearray or t is memoryview:
            n = obj.nbytes if t is memoryview else len(obj)
            if n < OOB_THRESHOLD:
                return bytes(obj) if t is memoryview else obj
            if t is memoryview:
                obj = obj.cast("B") if obj.c_contiguous else memoryview(obj.tobytes())
            kind = _KIND_BYTEARRAY if t is bytearray else _KIND_BYTES
            return _ExtType(EXT_BUFFER, _packb([self._frame(obj), kind]))
        if t is set:
            return _ExtType(EXT_SET, _packb([self.enc(x) for x in obj]))
        if t is frozenset:
            return _ExtType(EXT_FROZENSET, _packb([self.enc(x) for x in obj]))
        return self.pickled(obj)

    def pickled(self, obj):
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


def dumps(msg) -> list:
    """Encode ``msg`` into frames (frame 0 msgpack, then out-of-band buffers)."""
    enc = _Encoder()
    try:
        enc.frames[0] = _packb(enc.enc(msg))
    except (ValueError, OverflowError, TypeError) as e:
        # e.g. an int beyond 64 bits, or nesting deeper than msgpack allows
        raise LocalProtocolError(f"cannot encode message: {type(e).__name__}: {e}") from e
    return enc.frames


def loads(frames, allow_pickle: bool = True):
    """Decode frames produced by :func:`dumps`.

    With ``allow_pickle=False`` (unauthenticated peers, handshakes) a pickled
    value raises :class:`DecodeError` instead of being unpickled.
    Any malformed content raises :class:`DecodeError`.
    """
    nframes = len(frames)

    def frame(i):
        if type(i) is not int or not 0 < i < nframes:
            raise DecodeError(f"message refers to frame {i!r}, but it has {nframes} frames")
        return frames[i]

    def hook(code, data):
        if code == EXT_TUPLE:
            return tuple(unpack(data))
        if code == EXT_BUFFER:
            index, kind = unpack(data)
            buf = frame(index)
            if kind == _KIND_BYTEARRAY:
                return buf if type(buf) is bytearray else bytearray(buf)
            return buf if type(buf) is bytes else bytes(buf)
        if code == EXT_SET:
            return set(unpack(data))
        if code == EXT_FROZENSET:
            return frozenset(unpack(data))
        if code == EXT_PICKLE:
            if not allow_pickle:
                raise DecodeError(
                    "peer sent a pickled object on a connection that is not "
                    "authenticated; refusing to unpickle it"
                )
            head, indices = unpack(data)
            if type(head) is int:
                head = frame(head)
            return pickle_loads(head, buffers=[frame(i) for i in indices])
        raise DecodeError(f"unknown msgpack extension type {code}")

    def unpack(data):
        return msgpack.unpackb(
            data, ext_hook=hook, raw=False, strict_map_key=False, use_list=True
        )

    try:
        return unpack(frames[0])
    except DecodeError:
        raise
    except Exception as e:
        # msgpack raises ExtraData/FormatError/StackError/ValueError/..., and
        # unpickling can raise anything (a missing module, a bad reducer).
        raise DecodeError(f"could not decode message: {type(e).__name__}: {e}") from e
