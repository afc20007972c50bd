"""``Executor.upload_file``: ship a module or a zip to every worker, now and later.

How (issue 10): the file goes first to the center, which keeps it (at most
``center.max_upload_bytes`` of files in all) and hands it to every worker
that registers from then on: a worker started later, or one its nanny
restarted, installs it before it registers. Then the client asks the center
for the current workers and sends the file to each, which writes it into its
own directory, puts it on ``sys.path`` and (re)imports it. Any worker that
registered before the center kept the file is in that list, so none is
missed. Each worker's answer is awaited at most ``timeout`` seconds
(default ``center_timeout``).
"""

from __future__ import annotations

import asyncio
import io
import os
import zipfile

from ._data import WorkerUnreachable
from ._datasets import _old_center, _unsupported

__all__ = ["read_upload", "upload_file"]

#: what ``upload_file`` takes (the workers' ``distributed_worker.uploads`` agrees)
SUFFIXES = (".py", ".zip", ".egg", ".pyz")


def read_upload(path) -> tuple[str, bytes]:
    """``(file name, content)`` of `path`, checked here so mistakes fail early.

    Raises FileNotFoundError, ValueError (unsupported kind, not a zip) or
    SyntaxError (a ``.py`` that does not compile), each naming the file.
    """
    path = os.fspath(path)
    filename = os.path.basename(path)
    stem, suffix = os.path.splitext(filename)
    if suffix.lower() not in SUFFIXES or not stem:
        raise ValueError(
            f"upload_file: {path!r} is not a .py, .zip, .egg or .pyz file; ship a module or "
            f"a zip of a package (wheels are not supported: unzip one into a .zip)"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"upload_file: no such file: {path!r}")
    with open(path, "rb") as f:
        data = f.read()
    if suffix.lower() == ".py":
        if not stem.isidentifier():
            raise ValueError(f"upload_file: {filename!r}: {stem!r} is not an importable name")
        compile(data, path, "exec")  # SyntaxError with the file and the line
    elif not zipfile.is_zipfile(io.BytesIO(data)):
        raise ValueError(f"upload_file: {path!r} is not a zip archive")
    return filename, data


async def upload_file(executor, filename: str, data: bytes, load: bool = True, timeout=None):
    """Keep the file at the center, install it on every current worker.

    Returns ``{worker: [modules imported]}``. A worker that fails to import
    it raises that error (naming the worker); a worker that is gone is
    skipped (if it comes back, the center gives it the file).
    """
    session = executor.session
    if timeout is None:
        timeout = session.center_timeout
    try:
        await session.center_call("upload_file", filename=filename, data=data)
    except ValueError as e:
        if _unsupported(e, session.center_address):
            raise _old_center(session.center_address, "upload_file") from None
        raise
    await session.refresh_workers()
    workers = sorted(session.state.workers)
    msg = {"op": "upload_file", "reply": True, "filename": filename, "data": data, "load": load}

    async def one(worker):
        try:
            return await asyncio.wait_for(session._worker_call(worker, dict(msg)), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"upload_file: worker {worker} did not install {filename!r} within {timeout:g}s "
                f"(center_timeout); it may be busy importing it"
            ) from None

    results = await asyncio.gather(*(one(w) for w in workers), return_exceptions=True)
    out = {}
    for worker, r in zip(workers, results):
        if isinstance(r, WorkerUnreachable):
            session._worker_failed(worker, blame=False)
            continue
        if isinstance(r, BaseException):
            if hasattr(r, "add_note"):
                r.add_note(f"(while installing {filename!r} on worker {worker})")
            raise r
        out[worker] = list(r.get("modules", ())) if isinstance(r, dict) else []
    return out
