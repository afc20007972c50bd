"""Sessions for the distributed monorepo. Bare `nox` runs the default list, as CI does."""

# How the test sessions install the code: the packages are built once per nox
# run, an sdist first and then a wheel from that sdist (so a file the sdist
# forgets fails here, not for users). Each session installs the wheels it needs,
# NOT editable, in one pip command, so a sibling range such as
# distributed-core>=0.1,<0.2 resolves to the wheel built here, never to PyPI.
# pytest runs with --import-mode=importlib from a temporary directory outside
# the tree, after a check that prints which version of each package is imported
# from where and fails if any of them comes from the source tree.
#
# Interpreters: sessions use Python 3.11 unless they say otherwise. pyenv's
# shims only run the versions selected with `pyenv global`/`pyenv local`; so
# that nox finds python3.10 ... python3.13 anyway, this file links each
# pyenv-installed pythonX.Y into .nox/_pythons and puts that directory first
# on PATH.

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nox
import nox.project
from packaging.requirements import Requirement
from packaging.version import Version

nox.needs_version = ">=2024.3.2"

ROOT = Path(__file__).resolve().parent
PACKAGES_DIR = ROOT / "packages"
INTEGRATION_DIR = ROOT / "tests" / "integration"
CONSTRAINTS_DIR = ROOT / "constraints"

# short name -> distribution name; the import name is the distribution name with "_".
PACKAGES = {
    "core": "distributed-core",
    "center": "distributed-center",
    "worker": "distributed-worker",
    "client": "distributed-client",
}
DIST_TO_SHORT = {dist: short for short, dist in PACKAGES.items()}

# Siblings a package's tests need beyond what its pyproject.toml declares
# (the client's tests start LocalClusters, which run a center and workers).
EXTRA_TEST_SIBLINGS = {"client": ["center", "worker"]}

DEFAULT_PYTHON = "3.11"
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

# Every tornado 6.x the suite runs against. 6.0.4 and 6.1 have no wheels for
# Python >= 3.10 and build from the sdist (needs a C compiler; all of them
# installed and ran an IOStream echo on 3.10-3.13).
TORNADO_VERSIONS = ["6.0.4", "6.1", "6.2", "6.3.3", "6.4.2", "6.5.10", "6.6.1"]
# Lowest Python each tornado version installs on, where higher than 3.10
# (from the Requires-Python of the release on PyPI).
TORNADO_MIN_PYTHON = {"6.6.1": (3, 11)}

# Test tools every test session gets on top of the packages' [test] extras.
TEST_TOOLS = ["pytest-timeout"]
PYTEST_TIMEOUT = "180"  # seconds per test; a hung test fails instead of eating the CI budget
RUFF = "ruff==0.17.6"  # same version as the dev virtualenv, so lint agrees with editors

nox.options.sessions = ["lint", "deps", "tests", "integration", "tornado", "lowest", "docs"]
# pip via virtualenv: installs take ~5 s a session with a warm cache, so uv would
# save about a minute a run; not worth a second installer that ignores pip's config.
nox.options.default_venv_backend = "virtualenv"
nox.options.error_on_external_run = True


# --------------------------------------------------------------------------- interpreters


def _link_pyenv_interpreters() -> None:
    """Make every pyenv-installed pythonX.Y findable by nox (see the module docstring)."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    versions = pyenv_root / "versions"
    if not versions.is_dir():
        return
    link_dir = ROOT / ".nox" / "_pythons"
    for version in PYTHONS:
        pattern = re.compile(rf"^{re.escape(version)}\.(\d+)$")
        found = sorted(
            (int(m.group(1)), d)
            for d in versions.iterdir()
            if (m := pattern.match(d.name)) and (d / "bin" / f"python{version}").exists()
        )
        if not found:
            continue
        link_dir.mkdir(parents=True, exist_ok=True)
        link = link_dir / f"python{version}"
        target = found[-1][1] / "bin" / f"python{version}"
        if link.is_symlink() and link.resolve() == target.resolve():
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    if link_dir.is_dir():
        os.environ["PATH"] = os.pathsep.join([str(link_dir), os.environ.get("PATH", "")])


_link_pyenv_interpreters()


# --------------------------------------------------------------------------- wheels

_build: dict[str, Path] = {}  # "python" -> build env interpreter, "dist" -> output dir
_wheel_cache: dict[str, Path] = {}


def _wheels(session: nox.Session, shorts: list[str]) -> dict[str, Path]:
    """Build each package once per nox run: an sdist, then a wheel from that sdist."""
    if not _build:
        workdir = Path(tempfile.mkdtemp(prefix="distributed-wheels-"))
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
        # A separate environment, so `build` and the build backend never land in a
        # test environment and hide a missing dependency declaration. It holds every
        # package's build requirements, so builds need no isolated environments.
        env = workdir / "build-env"
        requires = sorted(
            {r for short in PACKAGES for r in _pyproject(short)["build-system"]["requires"]}
        )
        session.run(sys.executable, "-m", "virtualenv", "-q", str(env), external=True, silent=True)
        python = env / "bin" / "python"
        session.run(
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "build",
            *requires,
            external=True,
            silent=True,
        )
        _build.update(python=python, dist=workdir / "dist")
    for short in shorts:
        if short in _wheel_cache:
            continue
        dist = PACKAGES[short]
        outdir = _build["dist"] / short
        session.log(f"Building the sdist and wheel of {dist}")
        session.run(
            str(_build["python"]),
            "-m",
            "build",
            "--no-isolation",
            "--outdir",
            str(outdir),
            str(PACKAGES_DIR / dist),
            external=True,
            silent=True,
        )
        found = sorted(outdir.glob(f"{dist.replace('-', '_')}-*.whl"))
        if len(found) != 1:
            session.error(f"expected one wheel of {dist} in {outdir}, found {found}")
        _wheel_cache[short] = found[0]
    return {short: _wheel_cache[short] for short in shorts}


def _pyproject(short: str) -> dict:
    return nox.project.load_toml(PACKAGES_DIR / PACKAGES[short] / "pyproject.toml")


def _extras(short: str) -> list[str]:
    """The extras a test run installs for a package: all of them ([test], [local], ...)."""
    return sorted(_pyproject(short)["project"].get("optional-dependencies", {}))


def _sibling_closure(shorts: list[str], with_extras: bool) -> list[str]:
    """The given packages plus every sibling they declare, recursively."""
    needed: list[str] = []
    todo = [(short, _extras(short) if with_extras else []) for short in shorts]
    while todo:
        short, extras = todo.pop()
        if short not in needed:
            needed.append(short)
        project = _pyproject(short)["project"]
        requirements = list(project.get("dependencies", []))
        for extra in extras:
            requirements += project.get("optional-dependencies", {}).get(extra, [])
        for text in requirements:
            req = Requirement(text)
            sibling = DIST_TO_SHORT.get(req.name)
            if sibling and sibling not in needed:
                todo.append((sibling, sorted(req.extras)))
    return [short for short in PACKAGES if short in needed]  # stable order


def _install(
    session: nox.Session,
    targets: list[str],
    *requirements: str,
    test: bool = True,
) -> list[str]:
    """Install the wheels of `targets` and the siblings they need, in one pip command.

    With `test`, each target gets all its extras ([test] among them) and the
    common test tools.
    Returns the short names of every package installed.
    """
    shorts = _sibling_closure(targets, with_extras=test)
    if test:
        for target in targets:
            shorts += [s for s in EXTRA_TEST_SIBLINGS.get(target, []) if s not in shorts]
    shorts = [short for short in PACKAGES if short in shorts]
    # In a reused virtualenv (nox -r) pip would keep an installed copy of the same
    # version instead of the wheels just built: remove ours first. run_install does
    # nothing under --no-install (nox -R), which keeps what is installed.
    dists = list(PACKAGES.values())
    if session.run_install("python", "-m", "pip", "uninstall", "-y", *dists, silent=True) is None:
        session.log("--no-install: testing the packages already installed")
        return shorts
    wheels = _wheels(session, shorts)
    args = []
    for short in shorts:
        extras = _extras(short) if (test and short in targets) else []
        args.append(f"{wheels[short]}[{','.join(extras)}]" if extras else str(wheels[short]))
    if test:
        args += TEST_TOOLS
    session.install(*args, *requirements)
    return shorts


# --------------------------------------------------------------------------- checks

_IMPORT_CHECK = """
import importlib, importlib.metadata as md, pathlib, sys
root, venv = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
names = [a for a in sys.argv[3:] if "==" not in a]
pins = dict(a.split("==") for a in sys.argv[3:] if "==" in a)
bad = []
for name in names:
    module = importlib.import_module(name)
    path = pathlib.Path(module.__file__).resolve()
    dist = md.version(name.replace("_", "-"))
    print(f"{name} {module.__version__} (dist {dist}) from {path}")
    if module.__version__ != dist:
        bad.append(f"{name}: __version__ {module.__version__} != installed dist {dist}")
    if root in path.parents and venv not in path.parents:
        bad.append(f"{name}: imported from the source tree ({path}), not the installed wheel")
for dist in ("tornado", "msgpack", "cloudpickle", "click", "psutil", "tqdm", "numpy", "pytest"):
    try:
        print(f"  {dist} {md.version(dist)}")
    except md.PackageNotFoundError:
        pass
try:
    import msgpack  # the C extension silently falls back to pure Python where it fails to build
    print(f"  msgpack implementation: {msgpack.Packer.__module__}")
except ImportError:
    pass
def norm(version):  # "8.0" == "8.0.0"
    parts = version.split(".")
    while len(parts) > 1 and parts[-1] == "0":
        parts.pop()
    return parts
for dist, version in pins.items():
    try:
        installed = md.version(dist)
    except md.PackageNotFoundError:
        bad.append(f"{dist}: pinned to {version} but not installed")
        continue
    if norm(installed) != norm(version):
        bad.append(f"{dist}: wanted {version}, installed {installed}")
if bad:
    sys.exit("\\n".join(bad))
"""


def _check_imports(
    session: nox.Session, shorts: list[str], tmp: Path, pins: dict[str, str] | None = None
) -> None:
    """Print version and location of each package; fail if any comes from the source tree.

    Also fails unless each distribution in `pins` ({name: version}) is installed exactly.
    """
    modules = [PACKAGES[short].replace("-", "_") for short in shorts]
    venv = Path(session.virtualenv.location).resolve()
    script = tmp / "check_imports.py"
    script.write_text(_IMPORT_CHECK)
    with session.chdir(tmp):
        pin_args = [f"{d}=={v}" for d, v in (pins or {}).items()]
        session.run("python", script.name, str(ROOT), str(venv), *modules, *pin_args)


def _has_tests(directory: Path) -> bool:
    return directory.is_dir() and any(
        p for pattern in ("test_*.py", "*_test.py") for p in directory.rglob(pattern)
    )


def _test_dirs(shorts: list[str], integration: bool) -> list[Path]:
    dirs = [PACKAGES_DIR / PACKAGES[short] / "tests" for short in shorts]
    if integration:
        dirs.append(INTEGRATION_DIR)
    return [d for d in dirs if _has_tests(d)]


def _pytest(
    session: nox.Session, dirs: list[Path], shorts: list[str], pins: dict[str, str] | None = None
) -> None:
    """Check the imports, then run pytest on `dirs` from a directory outside the tree.

    pytest's exit code 5 (no tests collected) fails the session; callers skip
    beforehand when there is nothing to collect.
    """
    tmp = Path(tempfile.mkdtemp(prefix="distributed-pytest-"))
    try:
        _check_imports(session, shorts, tmp, pins)
        with session.chdir(tmp):
            session.run(
                "pytest",
                "-c",
                str(ROOT / "pyproject.toml"),
                "--rootdir",
                str(ROOT),
                "--import-mode=importlib",
                f"--timeout={PYTEST_TIMEOUT}",
                *map(str, dirs),
                *session.posargs,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _python_tuple(session: nox.Session) -> tuple[int, int]:
    version = session.python if isinstance(session.python, str) else DEFAULT_PYTHON
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def _all_tests(
    session: nox.Session,
    *requirements: str,
    constraints: Path | None = None,
    pins: dict[str, str] | None = None,
) -> None:
    """Install all four packages with test extras and run every package's tests + integration.

    `pins` ({distribution: version}) are checked to be installed exactly.
    """
    dirs = _test_dirs(list(PACKAGES), integration=True)
    if not dirs:
        session.skip("no test files yet in any packages/*/tests or tests/integration")
    extra = ["-c", str(constraints)] if constraints else []
    shorts = _install(session, list(PACKAGES), *requirements, *extra)
    _pytest(session, dirs, shorts, pins)


# --------------------------------------------------------------------------- sessions


@nox.session(python=DEFAULT_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the code (config in pyproject.toml)."""
    session.install(RUFF)
    paths = ["packages", "benchmarks", "tests", "tools", "docs", "noxfile.py"]
    paths = [p for p in paths if (ROOT / p).exists()]
    with session.chdir(ROOT):
        session.run("ruff", "check", *paths)
        session.run("ruff", "format", "--check", *paths)


@nox.session(python=DEFAULT_PYTHON)
def deps(session: nox.Session) -> None:
    """Fail if a package imports a sibling other than core, or an undeclared dependency."""
    with session.chdir(ROOT):
        session.run("python", "tools/check_deps.py")


@nox.session(python=DEFAULT_PYTHON)
@nox.parametrize("package", list(PACKAGES))
def tests(session: nox.Session, package: str) -> None:
    """One package's tests against its installed wheel (plus the siblings it declares)."""
    tests_dir = PACKAGES_DIR / PACKAGES[package] / "tests"
    if not _has_tests(tests_dir):
        session.skip(f"no test files (test_*.py) in {tests_dir.relative_to(ROOT)} yet")
    shorts = _install(session, [package])
    _pytest(session, [tests_dir], shorts)


@nox.session(python=DEFAULT_PYTHON)
def integration(session: nox.Session) -> None:
    """Real center + workers + clients in separate processes (tests/integration)."""
    if not _has_tests(INTEGRATION_DIR):
        # Skipped here because pytest would exit 5 (no tests collected), which must fail.
        session.skip(f"no test files (test_*.py) in {INTEGRATION_DIR.relative_to(ROOT)} yet")
    shorts = _install(session, list(PACKAGES))
    _pytest(session, [INTEGRATION_DIR], shorts)


@nox.session(python=DEFAULT_PYTHON)
@nox.parametrize("version", TORNADO_VERSIONS)
def tornado(session: nox.Session, version: str) -> None:
    """Every package's tests + integration against one pinned tornado 6.x."""
    needs = TORNADO_MIN_PYTHON.get(version)
    if needs and _python_tuple(session) < needs:
        session.skip(
            f"tornado {version} requires Python >= {needs[0]}.{needs[1]}; "
            f"this session runs {session.python}"
        )
    _all_tests(session, f"tornado=={version}", pins={"tornado": version})


@nox.session(python=DEFAULT_PYTHON)
def lowest(session: nox.Session) -> None:
    """The suite with every runtime dependency at its declared lower bound.

    constraints/lowest.txt must pin each third-party runtime dependency that a
    package declares (``name>=X``) at exactly ``X``; this session fails if the
    file and the pyproject.toml files disagree, so a raised bound or a new
    dependency cannot slip past it.
    """
    constraints = CONSTRAINTS_DIR / "lowest.txt"
    pins = _read_pins(constraints)
    declared = _declared_lower_bounds()
    problems = []
    for name, bounds in sorted(declared.items()):
        for bound, where in bounds:
            if bound is None:
                problems.append(f"{where} declares {name} without a lower bound (>=)")
            elif name not in pins:
                problems.append(f"{where} declares {name}>={bound}: add {name}=={bound}")
            elif Version(pins[name]) != Version(bound):
                problems.append(
                    f"{where} declares {name}>={bound} but {constraints.name} pins "
                    f"{name}=={pins[name]}: make them agree (one bound for all packages)"
                )
    for name in sorted(set(pins) - set(declared)):
        problems.append(f"{constraints.name} pins {name}, which no package depends on: remove it")
    if problems:
        session.error(
            f"{constraints.relative_to(ROOT)} is out of date:\n  " + "\n  ".join(problems)
        )
    _all_tests(session, constraints=constraints, pins=pins)


def _read_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            if spec.operator != "==":
                raise ValueError(f"{path}: {line!r} is not a name==version pin")
            pins[req.name.lower()] = spec.version
    return pins


def _declared_lower_bounds() -> dict[str, list[tuple[str | None, str]]]:
    """Third-party runtime dependencies -> [(lower bound or None, declaring pyproject), ...].

    Every extra but [test] counts as runtime.
    """
    declared: dict[str, list[tuple[str | None, str]]] = {}
    for short, dist in PACKAGES.items():
        project = _pyproject(short)["project"]
        requirements = list(project.get("dependencies", []))
        for extra, reqs in project.get("optional-dependencies", {}).items():
            if extra != "test":
                requirements += reqs
        for text in requirements:
            req = Requirement(text)
            name = req.name.lower()
            if name in DIST_TO_SHORT:
                continue
            lows = [s.version for s in req.specifier if s.operator == ">="]
            where = f"packages/{dist}/pyproject.toml"
            declared.setdefault(name, []).append((lows[0] if lows else None, where))
    return declared


@nox.session(name="python", python=PYTHONS)
def python_versions(session: nox.Session) -> None:
    """The whole suite on each Python 3.10-3.13 (not in the default list).

    A missing interpreter is skipped locally and is an error on CI (nox's default).
    """
    _all_tests(session)


@nox.session(python=DEFAULT_PYTHON)
def bench(session: nox.Session) -> None:
    """benchmarks/run.py --quick against the installed packages and dask.distributed.

    Arguments after `--` replace --quick, e.g. `nox -s bench -- core_bench` (full size).
    """
    script = ROOT / "benchmarks" / "run.py"
    if not script.exists():
        session.skip(f"{script.relative_to(ROOT)} does not exist yet")
    _install(session, list(PACKAGES), "dask", "distributed", "numpy", test=False)
    with session.chdir(ROOT):
        session.run("python", str(script), *(session.posargs or ["--quick"]))


@nox.session(python=DEFAULT_PYTHON)
def docs(session: nox.Session) -> None:
    """Sphinx HTML build and doctests; every warning is an error."""
    if not (ROOT / "docs" / "conf.py").exists():
        session.skip("docs/conf.py does not exist yet")
    requirements = ROOT / "docs" / "requirements.txt"
    docs_deps = ["-r", str(requirements)] if requirements.exists() else ["sphinx"]
    _install(session, list(PACKAGES), *docs_deps, test=False)
    out = ROOT / "docs" / "_build"
    for builder in ("html", "doctest"):
        session.run(
            "sphinx-build",
            "-W",
            "--keep-going",
            "-b",
            builder,
            "-d",
            str(out / "doctrees"),
            str(ROOT / "docs"),
            str(out / builder),
        )
