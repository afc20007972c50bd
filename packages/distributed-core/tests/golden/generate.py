"""Write the golden protocol vectors for the current PROTOCOL_VERSION.

Usage (from anywhere, with distributed-core importable)::

    python packages/distributed-core/tests/golden/generate.py           # add new vectors only
    python packages/distributed-core/tests/golden/generate.py --check   # write nothing, exit 1 on drift
    python packages/distributed-core/tests/golden/generate.py --force   # rewrite changed vectors

Each vector of ``vectors.VECTORS`` becomes ``v<major>.<minor>/<name>.bin``:
the exact bytes on the wire, ``pack_frames(dumps(value))``. The directory's
``vectors.json`` lists every file with its frame lengths, SHA-256, whether it
needs unpickling, and a type-exact description of the decoded value.

Without ``--force`` an existing file whose bytes would change is left alone
and reported: changed bytes mean the wire format changed, which needs a
PROTOCOL_VERSION decision first (see README.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import vectors  # noqa: E402  (the sibling module, found through sys.path above)

from distributed_core import PROTOCOL_VERSION, DecodeError, dumps, loads  # noqa: E402
from distributed_core.protocol import pack_frames  # noqa: E402


def encode(value) -> tuple[bytes, list]:
    frames = dumps(value)
    return pack_frames(frames), frames


def needs_pickle(frames) -> bool:
    try:
        loads(frames, allow_pickle=False)
    except DecodeError:
        return True
    return False


def build() -> tuple[dict, dict]:
    """The manifest and ``{file name: bytes}`` for the current code and values."""
    names = [v.name for v in vectors.VECTORS]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SystemExit(f"duplicate vector names in vectors.py: {', '.join(duplicates)}")
    files = {}
    entries = []
    for v in vectors.VECTORS:
        data, frames = encode(v.value)
        decoded = v.decoded if v.has_decoded else v.value
        fname = f"{v.name}.bin"
        files[fname] = data
        entries.append(
            {
                "name": v.name,
                "file": fname,
                "doc": v.doc,
                "frames": [memoryview(f).nbytes for f in frames],
                "sha256": hashlib.sha256(data).hexdigest(),
                "pickled": needs_pickle(frames),
                "value": vectors.describe(decoded),
            }
        )
    manifest = {
        "protocol": list(PROTOCOL_VERSION),
        "encoding": "pack_frames(dumps(value)); see docs/protocol.rst",
        "vectors": entries,
    }
    return manifest, files


def manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="write nothing; exit 1 on any drift")
    mode.add_argument(
        "--force",
        action="store_true",
        help="rewrite vectors whose bytes changed (a protocol change)",
    )
    args = parser.parse_args(argv)

    version = "v%d.%d" % PROTOCOL_VERSION
    out = HERE / version
    manifest, files = build()

    new, changed, same = [], [], []
    for fname, data in files.items():
        path = out / fname
        if not path.exists():
            new.append(fname)
        elif path.read_bytes() != data:
            changed.append(fname)
        else:
            same.append(fname)
    stale = sorted(p.name for p in out.glob("*.bin") if p.name not in files) if out.exists() else []
    manifest_path = out / "vectors.json"
    text = manifest_text(manifest)
    manifest_differs = not manifest_path.exists() or manifest_path.read_text("utf-8") != text

    problems = []
    if changed:
        problems.append(
            f"{len(changed)} vector(s) in {version}/ would change: {', '.join(changed)}. "
            "The wire format changed: decide on PROTOCOL_VERSION first (README.md); "
            "rerun with --force only if these bytes are meant to change"
        )
    if stale:
        problems.append(f"files in {version}/ with no vector in vectors.py: {', '.join(stale)}")

    if args.check:
        if new:
            problems.append(f"{len(new)} vector(s) missing from {version}/: {', '.join(new)}")
        if manifest_differs and not (changed or new or stale):
            problems.append(f"{version}/vectors.json is out of date")
        for p in problems:
            print(f"golden: {p}", file=sys.stderr)
        if not problems:
            print(f"golden: {len(same)} vectors in {version}/ match")
        return 1 if problems else 0

    if (changed or stale) and not args.force:
        for p in problems:
            print(f"golden: {p}", file=sys.stderr)
        return 1

    out.mkdir(exist_ok=True)
    for fname in new + changed:
        (out / fname).write_bytes(files[fname])
    for fname in stale:
        (out / fname).unlink()
    if manifest_differs:
        manifest_path.write_text(text, "utf-8")
    print(
        f"golden: {version}/: {len(new)} new, {len(changed)} rewritten, {len(stale)} removed, "
        f"{len(same)} unchanged"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
