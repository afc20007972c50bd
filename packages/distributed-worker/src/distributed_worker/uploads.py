"""Files a client ships to every worker (``Executor.upload_file``).

:class:`Uploads` writes each file into a directory of its own (made inside the
worker's ``local_directory``, removed when the worker closes), puts it on
``sys.path`` and (re)imports the module(s) it holds, so tasks that use them
work at once:

* ``name.py``: the directory goes on ``sys.path``; module ``name`` is imported
  (again, from the new file, if it was imported before).
* ``name.zip``, ``name.egg``, ``name.pyz``: the archive itself goes on
  ``sys.path`` (``zipimport``); every top-level module or package in it is
  imported again.

A file that does not compile, or whose import raises, gives that error to the
caller (the client sees it, naming the worker); the worker keeps serving. The
center keeps the files and hands them to workers that register later (a new
worker, or one restarted by its nanny), which install them the same way
before they take work.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import pkgutil
import shutil
import sys
import tempfile
import zipfile
import zipimport

__all__ = ["UPLOAD_SUFFIXES", "Uploads", "check_upload"]

logger = logging.getLogger("distributed_worker.uploads")

#: the kinds of files ``upload_file`` takes
UPLOAD_SUFFIXES = (".py", ".zip", ".egg", ".pyz")


def check_upload(filename, data) -> tuple[str, str]:
    """Check an upload's name and content; return ``(stem, suffix)``.

    Raises TypeError/ValueError naming what is wrong (a path instead of a
    bare file name, an unsupported suffix, content that is not bytes, a
    ``.py`` that does not compile, an archive that is not a zip file).
    """
    if not isinstance(filename, str) or not filename:
        raise TypeError(f"upload_file: filename must be a non-empty str, got {filename!r:.100}")
    if os.path.basename(filename) != filename or filename in (".", ".."):
        raise ValueError(
            f"upload_file: filename {filename!r} must be a bare file name, without directories"
        )
    stem, suffix = os.path.splitext(filename)
    suffix = suffix.lower()
    if suffix not in UPLOAD_SUFFIXES or not stem:
        raise ValueError(
            f"upload_file: {filename!r} is not a .py, .zip, .egg or .pyz file; ship a module "
            f"or a zip of a package (wheels are not supported: unzip one into a .zip)"
        )
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"upload_file: data must be bytes, got {type(data).__name__}")
    if suffix == ".py":
        if not stem.isidentifier():
            raise ValueError(
                f"upload_file: {filename!r} cannot be imported: {stem!r} is not a module name"
            )
        compile(bytes(data), filename, "exec")  # SyntaxError names the file and line
    elif not zipfile.is_zipfile(io.BytesIO(bytes(data))):
        raise ValueError(f"upload_file: {filename!r} is not a zip archive")
    return stem, suffix


class Uploads:
    """The uploaded files of one worker, in a private directory."""

    def __init__(self, local_directory: str | None = None):
        self.local_directory = local_directory
        self.directory: str | None = None  # made at the first upload
        #: file name -> modules it provided, in upload order
        self.files: dict[str, list[str]] = {}
        self._paths: list[str] = []  # what we put on sys.path

    def _dir(self) -> str:
        if self.directory is None:
            if self.local_directory:
                os.makedirs(self.local_directory, exist_ok=True)
            self.directory = tempfile.mkdtemp(prefix="dworker-files-", dir=self.local_directory)
        return self.directory

    def install(self, filename: str, data, load: bool = True) -> list[str]:
        """Write the file, put it on ``sys.path``, (re)import it; return the module names."""
        stem, suffix = check_upload(filename, data)
        directory = self._dir()
        path = os.path.join(directory, filename)
        tmp = path + ".part"
        with open(tmp, "wb") as f:
            f.write(bytes(data))
        os.replace(tmp, path)
        if suffix == ".py":
            self._on_path(directory)
            names = [stem]
        else:
            # a re-upload of the same archive: drop zipimport's caches of the old one
            sys.path_importer_cache.pop(path, None)
            cache = getattr(zipimport, "_zip_directory_cache", None)
            if isinstance(cache, dict):
                cache.pop(path, None)
            self._on_path(path)
            names = sorted(m.name for m in pkgutil.iter_modules([path]))
        importlib.invalidate_caches()
        if load:
            for name in names:
                _fresh_import(name)
        self.files[filename] = names
        logger.info("installed uploaded file %s (modules: %s)", filename, ", ".join(names))
        return names

    def _on_path(self, entry: str) -> None:
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)
        if entry not in self._paths:
            self._paths.append(entry)

    def close(self) -> None:
        """Take our entries off ``sys.path`` and remove the directory."""
        for entry in self._paths:
            while entry in sys.path:
                sys.path.remove(entry)
            sys.path_importer_cache.pop(entry, None)
        self._paths.clear()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def _fresh_import(name: str) -> None:
    """Import `name` from what is on ``sys.path`` now, forgetting an older copy."""
    for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[loaded]
    importlib.import_module(name)
