"""Run the benchmarks in this directory one after another, each in its own process.

Usage::

    python benchmarks/run.py              # every benchmark, full size
    python benchmarks/run.py --quick      # smoke run (what ``nox -s bench`` does)
    python benchmarks/run.py core_bench   # only the named ones

Each benchmark script prints its own table; this runner streams their output
unchanged and ends with a one-line status per script. Benchmarks are not
tests: the exit status is non-zero only if a script crashed, never because a
figure missed its target.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Known benchmarks, in the order they run; any other ``*.py`` here (not
#: starting with ``_``) runs after them.
ORDER = ["core_bench.py", "p2p_fetch.py", "center_memory.py", "client_bench.py"]


def discover() -> list[Path]:
    """The benchmark scripts present in this directory, in running order."""
    present = {p.name: p for p in HERE.glob("*.py")}
    present.pop(Path(__file__).name, None)
    ordered = [present.pop(name) for name in ORDER if name in present]
    ordered += sorted(p for name, p in present.items() if not name.startswith("_"))
    return ordered


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script")
    parser.add_argument("names", nargs="*", help="run only these (e.g. core_bench)")
    args = parser.parse_args(argv)

    scripts = discover()
    if args.names:
        wanted = {n.removesuffix(".py") for n in args.names}
        unknown = wanted - {p.stem for p in scripts}
        if unknown:
            known = ", ".join(p.stem for p in scripts)
            parser.error(f"no benchmark named {', '.join(sorted(unknown))}; found: {known}")
        scripts = [p for p in scripts if p.stem in wanted]
    if not scripts:
        print(f"no benchmark scripts found in {HERE}")
        return 1

    status = []
    for script in scripts:
        cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else [])
        print(f"\n===== {script.name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=HERE.parent).returncode
        elapsed = time.perf_counter() - t0
        status.append((script.name, rc, elapsed))
        print(f"===== {script.name}: exit status {rc} after {elapsed:.0f}s", flush=True)

    print("\nsummary:")
    for name, rc, elapsed in status:
        note = "ok" if rc == 0 else f"FAILED (exit {rc})"
        if rc == 2 and args.quick:
            note += ": a usage error; does the script accept --quick?"
        print(f"  {name:24s} {elapsed:5.0f}s  {note}")
    return 0 if all(rc == 0 for _, rc, _ in status) else 1


if __name__ == "__main__":
    sys.exit(main())
