"""``Executor.upload_file``: ship a module or a zip to every worker, now and later.

How (issue 10): the client sends the file to every current worker, which
writes it into its own directory, puts it on ``sys.path`` and (re)imports it;
an error there (the module raises on import) stops the upload. Then the
center keeps the file (at most ``center.max_upload_bytes`` of files in all)
and hands it to every worker that registers from then on: a worker started
later, or one its nanny restarted, installs it as it registers. Last, the
client sends it to any worker that registered between its first look and the
center keeping the file, so none is missed. Each worker's answer is awaited
at most ``timeout`` seconds (default ``center_timeout``).
"""

from __future__ import annotations

import asyncio
import io
import os
import zipfile

from ._data import WorkerUnreachable
from ._datasets import _unsupported

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
    """Install the file on every current worker, then keep it at the center for later ones.

    Returns ``{worker: [modules imported]}``. A worker that fails to import
    it raises that error (naming the worker), and the center does not keep
    the file; a worker that is gone is skipped.
    """
    session = executor.session
    if timeout is None:
        timeout = session.center_timeout
    msg = {"op": "upload_file", "reply": True, "filename": filename, "data": data, "load": load}

    async def one(worker):
        try:
            return await asyncio.wait_for(session._worker_call(worker, dict(msg)), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"upload_file: worker {worker} did not install {filename!r} within {timeout:g}s "
                f"(center_timeout); it may be busy importing it"
            ) from None

    async def to_workers(workers) -> dict:
        results = await asyncio.gather(*(one(w) for w in workers), return_exceptions=True)
        out = {}
        for worker, r in zip(workers, results):
            if isinstance(r, WorkerUnreachable):
                session._worker_failed(worker, blame=False)
                continue
            if isinstance(r, ValueError) and "unknown op" in str(r):
                raise RuntimeError(
                    f"worker {worker} does not support upload_file (it predates it): "
                    f"upgrade distributed-worker there"
                ) from None
            if isinstance(r, BaseException):
                if hasattr(r, "add_note"):
                    r.add_note(f"(while installing {filename!r} on worker {worker})")
                raise r
            out[worker] = list(r.get("modules", ())) if isinstance(r, dict) else []
        return out

    # 1. the current workers: an import error stops here, before the center keeps it
    await session.refresh_workers()
    first = sorted(session.state.workers)
    out = await to_workers(first)
    # 2. the center gives it to every worker that registers from now on
    try:
        await session.center_call("upload_file", filename=filename, data=data)
    except ValueError as e:
        if _unsupported(e, session.center_address):
            raise RuntimeError(
                f"the center at {session.center_address} does not support upload_file (it "
                f"predates it): the current workers have {filename!r}, workers that join "
                f"later will not; upgrade distributed-center there"
            ) from None
        raise
    # 3. workers that registered between 1 and 2 got it from neither
    await session.refresh_workers()
    out.update(await to_workers(sorted(set(session.state.workers) - set(first))))
    return out
