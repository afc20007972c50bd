"""Receive buffers that need neither a copy nor a zero-fill.

``bytearray(n)`` zero-fills every page only for the socket to overwrite it,
and turning a received buffer into ``bytes`` costs a full copy (and twice the
payload in memory at the peak). CPython can create both types uninitialised
(``PyBytes_FromStringAndSize(NULL, n)``, which is what ``socket.recv`` does
itself); the reader fills them completely before anyone else sees them.

Huge pages are deliberately not requested: on the benchmark VM, a transfer
between two huge-page buffers (a numpy array sent into ``numpy.empty``) ran
at about half the speed of any other combination (see benchmarks/README.md).
"""

from __future__ import annotations

import ctypes
import sys

try:
    _new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
    _new_bytes.restype = ctypes.py_object
    _new_bytes.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    _new_bytearray = ctypes.pythonapi.PyByteArray_FromStringAndSize
    _new_bytearray.restype = ctypes.py_object
    _new_bytearray.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    _SVAL = bytes.__basicsize__ - 1  # offset of ob_sval in PyBytesObject
    _probe = _new_bytes(None, 16)
    memoryview((ctypes.c_char * 16).from_address(id(_probe) + _SVAL)).cast("B")[:] = b"x" * 16
    _OK = sys.implementation.name == "cpython" and _probe == b"x" * 16
    del _probe
except (AttributeError, ValueError, TypeError):  # pragma: no cover - not CPython
    _OK = False


def new_bytearray(n: int) -> bytearray:
    """An uninitialised ``bytearray`` of ``n`` bytes; the caller fills all of it."""
    return _new_bytearray(None, n) if _OK else bytearray(n)


def new_bytes(n: int):
    """``(b, view)``: an uninitialised ``bytes`` of ``n`` bytes and a writable view.

    Fill all of ``view``, release it, and only then hand ``b`` out (nobody
    may have seen or hashed it before). ``(None, None)`` where this is not
    possible (not CPython): receive into a bytearray and copy instead.
    """
    if not _OK:
        return None, None
    b = _new_bytes(None, n)
    return b, memoryview((ctypes.c_char * n).from_address(id(b) + _SVAL)).cast("B")
