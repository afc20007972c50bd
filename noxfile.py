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
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import nox
import nox.project
from nox.command import CommandFailed
from packaging.requirements import Requirement
from packaging.version import Version

nox.needs_version = ">=2024.3.2"

ROOT = Path(__file__).resolve().parent
PACKAGES_DIR = ROOT / "packages"
INTEGRATION_DIR = ROOT / "tests" / "integration"
MEMORY_DIR = ROOT / "tests" / "memory"
SCALE_DIR = ROOT / "tests" / "scale"
HOSTS_DIR = ROOT / "tests" / "hosts"
DASHBOARD_DIR = ROOT / "tests" / "dashboard"
DASKSUITE_DIR = ROOT / "tests" / "dasksuite"
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

# The default run's tornado matrix leaves out its two ends: the lowest (6.0.4)
# runs the whole suite in `lowest` (constraints/lowest.txt pins it) and the
# newest in `tests` and `integration`, so `tornado(version=...)` for them would
# repeat those (about 2 minutes each of the 45-minute CI budget).
# `nox -s tornado` still runs all seven.
TORNADO_DEFAULT = [v for v in TORNADO_VERSIONS if v not in ("6.0.4", TORNADO_VERSIONS[-1])]

nox.options.sessions = [
    "lint", "deps", "tests", "integration", "memory", "hosts", "compat", "release",
    *(f"tornado(version='{v}')" for v in TORNADO_DEFAULT),
    "lowest", "docs", "dashboard", "scale", "typecheck", "dask",
]  # fmt: skip
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


def _build_env(session: nox.Session) -> None:
    """Create the build environment once per nox run (see _wheels)."""
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
        _build.update(python=python, dist=workdir / "dist", workdir=workdir)


def _build_wheel(session: nox.Session, dist: str, source: Path, outdir: Path) -> Path:
    """Build an sdist of the package in `source`, then a wheel from it; return the wheel."""
    _build_env(session)
    session.log(f"Building the sdist and wheel of {dist} from {source}")
    session.run(
        str(_build["python"]),
        "-m",
        "build",
        "--no-isolation",
        "--outdir",
        str(outdir),
        str(source),
        external=True,
        silent=True,
    )
    found = sorted(outdir.glob(f"{dist.replace('-', '_')}-*.whl"))
    if len(found) != 1:
        session.error(f"expected one wheel of {dist} in {outdir}, found {found}")
    return found[0]


def _wheels(session: nox.Session, shorts: list[str]) -> dict[str, Path]:
    """Build each package once per nox run: an sdist, then a wheel from that sdist."""
    _build_env(session)
    for short in shorts:
        if short not in _wheel_cache:
            dist = PACKAGES[short]
            outdir = _build["dist"] / short
            _wheel_cache[short] = _build_wheel(session, dist, PACKAGES_DIR / dist, outdir)
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
    session: nox.Session,
    shorts: list[str],
    tmp: Path,
    pins: dict[str, str] | None = None,
    venv: Path | None = None,
) -> None:
    """Print version and location of each package; fail if any comes from the source tree.

    Also fails unless each distribution in `pins` ({name: version}) is installed exactly.
    `venv` is the environment to check (default: the session's).
    """
    modules = [PACKAGES[short].replace("-", "_") for short in shorts]
    python = "python" if venv is None else str(venv / "bin" / "python")
    venv = Path(venv or session.virtualenv.location).resolve()
    script = tmp / "check_imports.py"
    script.write_text(_IMPORT_CHECK)
    with session.chdir(tmp):
        pin_args = [f"{d}=={v}" for d, v in (pins or {}).items()]
        session.run(python, script.name, str(ROOT), str(venv), *modules, *pin_args, external=True)


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
def memory(session: nox.Session) -> None:
    """Memory limits, spilling, pausing, nannies and orphans with real processes and
    real limits (tests/memory): heavy (about 1 GB through a 200 MB worker), so only here."""
    shorts = _install(session, list(PACKAGES))
    _pytest(session, [MEMORY_DIR], shorts)


@nox.session(python=DEFAULT_PYTHON)
def scale(session: nox.Session) -> None:
    """100,000 futures through wait, as_completed, gather and release (tests/scale):
    too heavy for the per-package suites, which `tests` and `lowest` both run."""
    shorts = _install(session, list(PACKAGES))
    _pytest(session, [SCALE_DIR], shorts)


@nox.session(python=DEFAULT_PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over user code of distributed_client's public API
    (tests/typecheck), against the installed wheel: its py.typed and hints."""
    shorts = _install(session, ["client"], "mypy>=1.10", test=False)
    tmp = Path(tempfile.mkdtemp(prefix="distributed-typecheck-"))
    try:
        _check_imports(session, shorts, tmp)
        with session.chdir(tmp):  # outside the tree: mypy sees the installed packages
            session.run(
                "mypy", "--strict", "--follow-imports=silent", "--no-incremental",
                "--python-version", "3.11", str(ROOT / "tests" / "typecheck"),
            )  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _hosts_unavailable() -> str | None:
    """Why network namespaces cannot be created here (tests/hosts/harness.py), or None."""
    if not sys.platform.startswith("linux"):
        return f"needs Linux network namespaces (this is {sys.platform})"
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        return f"needs {' and '.join(missing)} (apt-get install iproute2 nftables)"
    return None


@nox.session(python=DEFAULT_PYTHON)
def hosts(session: nox.Session) -> None:
    """Multi-host tests on simulated hosts: network namespaces on a bridge (tests/hosts).

    Root only, with iproute2 and nftables; skipped elsewhere with one line saying why.
    """
    reason = _hosts_unavailable()
    if reason and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        # .ci/run installs ip and nft as root: a skip there would hide the suite
        session.error(f"simulated hosts {reason}, and CI must run them (see .ci/run)")
    if reason:  # session.skip logs this as the one line saying why
        session.skip(f"simulated hosts {reason}")
    if not _has_tests(HOSTS_DIR):
        session.skip(f"no test files (test_*.py) in {HOSTS_DIR.relative_to(ROOT)} yet")
    shorts = _install(session, list(PACKAGES))
    _pytest(session, [HOSTS_DIR], shorts)


# dask's own test modules, from the installed dask wheel (see tests/dasksuite/).
DASK_MODULES = [
    "dask.array.tests.test_array_core",
    "dask.bag.tests.test_bag",
    "dask.dataframe.tests.test_dataframe",
    "dask.tests.test_delayed",
]


@nox.session(python=DEFAULT_PYTHON)
def dask(session: nox.Session) -> None:
    """dask's own tests for array, bag, dataframe and delayed with an Executor as dask's scheduler.

    One LocalCluster for the session (tests/dasksuite/dasksuite_plugin.py); the
    failures no distributed scheduler can avoid are xfailed there, each with its
    reason. Arguments after `--` go to pytest (e.g. `-- --dasksuite-all` runs all
    of test_dataframe instead of the documented subset).
    """
    shorts = _install(session, ["client"], "pytest-mock")
    tmp = Path(tempfile.mkdtemp(prefix="distributed-dasksuite-"))
    try:
        _check_imports(session, shorts, tmp)
        with session.chdir(tmp):
            session.run(
                "python",
                "-m",
                "pytest",
                "-c",
                str(DASKSUITE_DIR / "pytest.ini"),
                "--rootdir",
                str(tmp),
                "-p",
                "dasksuite_plugin",
                f"--timeout={PYTEST_TIMEOUT}",
                "--pyargs",
                *DASK_MODULES,
                *session.posargs,
                env={"PYTHONPATH": str(DASKSUITE_DIR)},
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@nox.session(python=DEFAULT_PYTHON)
def dashboard(session: nox.Session) -> None:
    """The dashboard in headless Chromium, and center memory under 100,000 tasks (tests/dashboard).

    Needs Debian's chromium and chromium-driver (.ci/run installs them as root; never a
    browser from a CDN). Without them: skipped locally with one line saying why, an
    error in CI (CI set), so CI cannot pass without running these tests.
    Screenshots go to .nox/dashboard-artifacts.
    """
    missing = [tool for tool in ("chromium", "chromedriver") if shutil.which(tool) is None]
    if missing:
        reason = (f"{' and '.join(missing)} not found: apt-get install chromium "
                  f"chromium-driver (as root; .ci/run does it)")  # fmt: skip
        if os.environ.get("CI"):
            session.error(f"dashboard browser tests cannot run in CI: {reason}")
        session.skip(reason)
    shorts = _install(session, list(PACKAGES), "selenium>=4.11")
    session.env["DASHBOARD_ARTIFACTS"] = str(ROOT / ".nox" / "dashboard-artifacts")
    _pytest(session, [DASHBOARD_DIR], shorts)


@nox.session(python=DEFAULT_PYTHON)
@nox.parametrize("version", TORNADO_VERSIONS)
def tornado(session: nox.Session, version: str) -> None:
    """distributed-core's tests + integration against one pinned tornado 6.x.

    Only core (streams, servers, clients) and the center's dashboard
    (tornado.web) use tornado directly; everything else reaches it through
    core. So each version runs core's suite (every framing, TLS, timeout and
    bad-input path), the dashboard's tests and the integration tests (real
    processes end to end). The other packages' full
    suites run against the lowest tornado in `lowest` (6.0.4) and the newest
    in `tests`, which bracket the matrix; running all of them 7 more times
    would take most of the CI budget.
    """
    needs = TORNADO_MIN_PYTHON.get(version)
    if needs and _python_tuple(session) < needs:
        session.skip(
            f"tornado {version} requires Python >= {needs[0]}.{needs[1]}; "
            f"this session runs {session.python}"
        )
    dashboard = PACKAGES_DIR / PACKAGES["center"] / "tests" / "test_dashboard.py"
    dirs = [*_test_dirs(["core"], integration=True), dashboard]
    shorts = _install(session, list(PACKAGES), f"tornado=={version}")
    _pytest(session, dirs, shorts, {"tornado": version})


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
    # a pin whose every declaration has a marker false here (tomli: Python < 3.11)
    # is not installed in this session, so it is not checked as installed either
    skip = _not_for_this_python(session)
    _all_tests(
        session, constraints=constraints, pins={n: v for n, v in pins.items() if n not in skip}
    )


def _not_for_this_python(session: nox.Session) -> set[str]:
    """Third-party dependencies whose every declaration has a marker false on the session's Python."""
    major, minor = _python_tuple(session)
    env = {"python_version": f"{major}.{minor}", "python_full_version": f"{major}.{minor}.0"}
    applies: dict[str, bool] = {}
    for short in PACKAGES:
        project = _pyproject(short)["project"]
        texts = list(project.get("dependencies", []))
        for extra, reqs in project.get("optional-dependencies", {}).items():
            if extra != "test":
                texts += reqs
        for text in texts:
            req = Requirement(text)
            name = req.name.lower()
            ok = req.marker is None or req.marker.evaluate({**env, "extra": ""})
            applies[name] = applies.get(name, False) or ok
    return {name for name, ok in applies.items() if not ok}


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


RELEASE_DIR = ROOT / "dist"


def _simple_index(house: Path) -> None:
    """Write house/simple/ (PEP 503): one page per project linking to its files in `house`."""
    import hashlib
    import html

    projects: dict[str, list[Path]] = {}
    for path in sorted(house.iterdir()):
        if path.suffix == ".whl":
            name = path.name.split("-")[0]
        elif path.name.endswith(".tar.gz"):
            name = path.name[: -len(".tar.gz")].rsplit("-", 1)[0]
        else:
            continue
        projects.setdefault(re.sub(r"[-_.]+", "-", name).lower(), []).append(path)
    simple = house / "simple"
    shutil.rmtree(simple, ignore_errors=True)
    simple.mkdir()
    head = '<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0">'
    links = "".join(f'<a href="{p}/">{p}</a><br>\n' for p in sorted(projects))
    (simple / "index.html").write_text(f"{head}</head><body>\n{links}</body></html>\n")
    for project, files in projects.items():
        (simple / project).mkdir()
        rows = []
        for f in files:
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
            rows.append(f'<a href="../../{html.escape(f.name)}#sha256={digest}">{f.name}</a><br>')
        page = f"{head}<title>{project}</title></head><body>\n" + "\n".join(rows)
        (simple / project / "index.html").write_text(page + "\n</body></html>\n")


@nox.session(python=DEFAULT_PYTHON)
def release(session: nox.Session) -> None:
    """dist/wheelhouse: every package's sdist and wheel at HEAD's version, the wheels of all
    their runtime dependencies (every extra but [test]) for this Python, and a PEP 503
    index (dist/wheelhouse/simple); then tools/check_wheelhouse.py installs each package
    alone from it, in fresh virtualenvs, and runs a cluster across them.

    `pip install --no-index --find-links dist/wheelhouse distributed-worker` or
    `pip install --index-url file://$PWD/dist/wheelhouse/simple distributed-worker`
    then works with no other index.
    """
    house = RELEASE_DIR / "wheelhouse"
    shutil.rmtree(house, ignore_errors=True)
    house.mkdir(parents=True)
    ours = []
    for short, dist in PACKAGES.items():
        wheel = _build_wheel(session, dist, PACKAGES_DIR / dist, house)
        extras = [e for e in _extras(short) if e != "test"]
        ours.append(f"{wheel}[{','.join(extras)}]" if extras else str(wheel))
        session.log(f"{dist} {_head_version(dist)}: {wheel.name}")
    deps = Path(tempfile.mkdtemp(prefix="distributed-deps-"))
    try:
        # one command: the siblings resolve to the wheels just built
        session.run("python", "-m", "pip", "wheel", "-q", "--wheel-dir", str(deps), *ours)
        for wheel in deps.glob("*.whl"):
            if not (house / wheel.name).exists():
                shutil.copy2(wheel, house)
    finally:
        shutil.rmtree(deps, ignore_errors=True)
    _simple_index(house)
    files = sorted(p.name for p in house.iterdir() if p.is_file())
    session.log(f"{house.relative_to(ROOT)}: {len(files)} files\n  " + "\n  ".join(files))
    session.run("python", str(ROOT / "tools" / "check_wheelhouse.py"), str(house))
    _check_deploy_files(session, house)


def _check_deploy_files(session: nox.Session, house: Path) -> None:
    """deploy/kubernetes against the Kubernetes schema; deploy/Dockerfile where an engine runs."""
    manifests = sorted(str(p) for p in (ROOT / "deploy" / "kubernetes").glob("*.yaml"))
    session.install("kubernetes-validate>=1.31")  # bundled schemas: works offline
    session.run("kubernetes-validate", "--strict", *manifests)
    # the validator must be able to fail: a manifest with an unknown field is rejected
    broken = Path(tempfile.mkdtemp(prefix="distributed-k8s-")) / "broken.yaml"
    broken.write_text(Path(manifests[0]).read_text().replace("replicas:", "replicaz:", 1))
    try:
        session.run("kubernetes-validate", "--strict", "--quiet", str(broken), success_codes=[1])
    finally:
        shutil.rmtree(broken.parent, ignore_errors=True)
    for engine in ("docker", "podman"):
        tool = shutil.which(engine)
        if tool and subprocess.run([tool, "info"], capture_output=True, timeout=30).returncode == 0:
            session.run(
                tool, "build", "-f", str(ROOT / "deploy" / "Dockerfile"),
                "-t", "distributed-worker:test", str(house), external=True,
            )  # fmt: skip
            return
    session.log(
        "deploy/Dockerfile not built: no container engine answers here (docker/podman info)"
    )


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


# --------------------------------------------------------------------------- compat

# Mixed-version clusters (docs/compatibility.md). releases.toml records, per
# package, version = commit of this repository; the "old" environment holds
# each package at its latest recorded release not newer than HEAD's version,
# the session's own ("new") environment holds HEAD's wheels.
RELEASES_FILE = ROOT / "releases.toml"
SCENARIOS = INTEGRATION_DIR / "test_scenarios.py"
COMPAT_KINDS = ("center", "worker", "client")  # node kind -> the package it runs
COMPAT_WORKERS = 2
COMPAT_LINE_TIMEOUT = 30.0  # seconds to wait for a process's startup line
COMPAT_STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL


class _CompatFailure(Exception):
    """A cluster process did not start or stop as expected (message says why)."""


class _CompatProc:
    """One center or worker CLI process, its stdout read by a thread, stderr kept in a file."""

    def __init__(self, name: str, argv: list[str], cwd: Path):
        self.name = name
        self.argv = argv
        self._stderr = tempfile.TemporaryFile()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=cwd,  # outside the tree: `-m` puts the cwd first on sys.path
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self._stop_requested = False
        self.lines: list[str] = []
        self._eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in self.popen.stdout:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\r\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def describe(self) -> str:
        self._stderr.seek(0)
        stderr = self._stderr.read().decode(errors="replace").rstrip() or "(nothing)"
        stdout = "\n".join(self.lines) or "(nothing)"
        return (
            f"{self.name} (pid {self.popen.pid}, exit code {self.popen.poll()}):\n"
            f"  command: {' '.join(self.argv)}\n"
            f"  --- stdout ---\n{stdout}\n  --- stderr ---\n{stderr}"
        )

    def wait_line(self, prefix: str) -> str:
        """The rest of the first stdout line starting with `prefix`."""
        deadline = time.monotonic() + COMPAT_LINE_TIMEOUT
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line[len(prefix) :].strip()
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    break
                self._cond.wait(left)
        if self._eof:
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
        what = "it closed its stdout" if self._eof else f"not within {COMPAT_LINE_TIMEOUT:g}s"
        raise _CompatFailure(f"{self.name}: no line {prefix!r} ({what})\n{self.describe()}")

    def request_stop(self) -> None:
        """SIGTERM, once (a second one could interrupt a clean shutdown)."""
        if self.popen.poll() is None and not self._stop_requested:
            self._stop_requested = True
            self.popen.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after COMPAT_STOP_TIMEOUT; the exit code."""
        self.request_stop()
        try:
            self.popen.wait(COMPAT_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._reader.join(5)
        return self.popen.returncode

    def close(self) -> None:
        self.popen.stdout.close()
        self._stderr.close()


def _head_version(dist: str) -> str:
    path = PACKAGES_DIR / dist / "src" / dist.replace("-", "_") / "_version.py"
    found = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", path.read_text(), re.M)
    if not found:
        raise ValueError(f"{path}: no __version__ = '...' line")
    return found.group(1)


def _previous_release(session: nox.Session, dist: str) -> tuple[str, str]:
    """(version, commit) of the latest release of `dist` in releases.toml not newer than HEAD."""
    name = RELEASES_FILE.name
    if not RELEASES_FILE.exists():
        session.error(f"{name} does not exist; compat needs the recorded releases")
    recorded = nox.project.load_toml(RELEASES_FILE).get(dist, {})
    head = Version(_head_version(dist))
    older = sorted((Version(v), v, c) for v, c in recorded.items() if Version(v) <= head)
    if not older:
        session.error(
            f"{name} records no release of {dist} at or below its HEAD version {head} "
            f"(recorded: {sorted(recorded) or 'none'})"
        )
    _, version, commit = older[-1]
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        session.error(f"{name}: {dist} {version} = {commit!r} is not a full 40-hex commit id")
    return version, commit


def _git(session: nox.Session, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=False)
    except FileNotFoundError:
        session.error("compat needs git (to rebuild released versions from the history)")


def _release_source(session: nox.Session, dist: str, version: str, commit: str, dest: Path):
    """packages/<dist> as it was at `commit` (git archive), extracted under `dest`."""
    if _git(session, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        session.error(
            f"{RELEASES_FILE.name} records {dist} {version} at commit {commit}, which is not "
            f"in the git history of {ROOT}. In a shallow clone run `git fetch --unshallow` "
            f"(CI needs a full clone); otherwise the recorded commit id is wrong."
        )
    archive = _git(session, "archive", "--format=tar", commit, f"packages/{dist}")
    if archive.returncode != 0:
        session.error(
            f"git archive {commit} packages/{dist} failed ({dist} {version} in "
            f"{RELEASES_FILE.name}): {archive.stderr.decode(errors='replace').strip()}"
        )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # Python < 3.11.4; the archive comes from our own repository
            tar.extractall(dest)  # noqa: S202
    return dest / "packages" / dist


def _old_env(session: nox.Session, workdir: Path) -> tuple[Path, dict[str, str]]:
    """A virtualenv with every package at its previous release; (its path, {dist: version})."""
    _build_env(session)
    head_requires = {r for s in PACKAGES for r in _pyproject(s)["build-system"]["requires"]}
    args, versions = [], {}
    for short, dist in PACKAGES.items():
        version, commit = _previous_release(session, dist)
        versions[dist] = version
        source = _release_source(session, dist, version, commit, workdir / "src" / short)
        pyproject = nox.project.load_toml(source / "pyproject.toml")
        requires = set(pyproject["build-system"]["requires"]) - head_requires
        if requires:  # that release builds with something HEAD no longer needs
            session.run(
                str(_build["python"]), "-m", "pip", "install", "-q", *sorted(requires),
                external=True, silent=True,
            )  # fmt: skip
        session.log(f"{dist} {version}: commit {commit} (releases.toml)")
        wheel = _build_wheel(session, dist, source, workdir / "dist" / short)
        test_extra = "test" in pyproject["project"].get("optional-dependencies", {})
        args.append(f"{wheel}[test]" if test_extra else str(wheel))
    env = workdir / "old-env"
    interpreter = Path(session.virtualenv.location) / "bin" / "python"
    session.run(
        sys.executable, "-m", "virtualenv", "-q", "-p", str(interpreter), str(env),
        external=True, silent=True,
    )  # fmt: skip
    # One pip command, so sibling ranges resolve to these wheels, never to PyPI.
    session.run(
        str(env / "bin" / "python"), "-m", "pip", "install", "-q",
        *args, "pytest", *TEST_TOOLS, external=True, silent=True,
    )  # fmt: skip
    return env, versions


def _insecure_flag(python: str, module: str) -> list[str]:
    """["--insecure"] if that CLI has the flag (secure by default, issue 12), else []."""
    out = subprocess.run(
        [python, "-m", module, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    return ["--insecure"] if "--insecure" in out.stdout else []


def _compat_cluster(session: nox.Session, pythons: dict[str, str], cwd: Path) -> list[str]:
    """A center and workers from their envs, the scenarios from the client's; the problems.

    Releases before secure-by-default know no default secret file: the cluster
    runs without a secret (--insecure where a CLI has it, and no secret file for
    the clients: DISTRIBUTED_SECRET_FILE names a missing one).
    """
    procs: list[_CompatProc] = []
    problems: list[str] = []
    scenarios_failed = False
    try:
        center = _CompatProc(
            "center",
            [
                pythons["center"], "-m", "distributed_center", "--host", "127.0.0.1",
                "--port", "0", *_insecure_flag(pythons["center"], "distributed_center"),
            ],
            cwd,
        )  # fmt: skip
        procs.append(center)
        address = center.wait_line("Start center at ")
        workers = [
            _CompatProc(
                f"worker-{i}",
                [
                    pythons["worker"],
                    "-m",
                    "distributed_worker",
                    address,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--ncores",
                    "1",
                    *_insecure_flag(pythons["worker"], "distributed_worker"),
                ],
                cwd,
            )  # fmt: skip
            for i in range(COMPAT_WORKERS)
        ]
        procs += workers
        for worker in workers:
            worker.wait_line("Start worker at ")
            worker.wait_line("Registered with center at ")
        session.log(f"cluster up: center {address}, {len(workers)} workers")
        with session.chdir(cwd):
            try:
                session.run(
                    pythons["client"], "-m", "pytest",
                    "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT),
                    "--import-mode=importlib", "-p", "no:cacheprovider",
                    f"--timeout={PYTEST_TIMEOUT}", str(SCENARIOS), *session.posargs,
                    env={
                        "DISTRIBUTED_TEST_CENTER": address,
                        "DISTRIBUTED_SECRET_FILE": str(cwd / "no-secret-file"),
                    },
                    external=True,
                )  # fmt: skip
            except CommandFailed:
                scenarios_failed = True
                problems.append("the scenarios failed (pytest output above)")
    except _CompatFailure as e:
        problems.append(str(e))
    finally:
        # workers first (all signalled at once), then the center
        for group in ([p for p in procs if p.name != "center"], procs[:1]):
            for proc in group:
                proc.request_stop()
            for proc in group:
                code = proc.stop()
                if code != 0 and not any(proc.name in p for p in problems):
                    problems.append(f"{proc.name} exited with code {code}\n{proc.describe()}")
        if scenarios_failed:  # what the cluster said meanwhile
            problems.append(
                "the cluster's processes:\n" + "\n".join(proc.describe() for proc in procs)
            )
        for proc in procs:
            proc.close()
    return problems


@nox.session(python=DEFAULT_PYTHON)
def compat(session: nox.Session) -> None:
    """Mixed clusters: each node kind at HEAD with the others at their previous release,
    and the reverse, running tests/integration/test_scenarios.py (docs/compatibility.md).

    Arguments after `--` go to pytest.
    """
    workdir = Path(tempfile.mkdtemp(prefix="distributed-compat-"))
    try:
        shorts = _install(session, list(PACKAGES))
        old_env, old_versions = _old_env(session, workdir)
        new_versions = {dist: _head_version(dist) for dist in PACKAGES.values()}
        new_env = Path(session.virtualenv.location)
        (workdir / "check").mkdir()
        session.log("new environment (HEAD):")
        _check_imports(session, shorts, workdir / "check", pins=new_versions)
        session.log("old environment (previous releases, releases.toml):")
        _check_imports(session, shorts, workdir / "check", pins=old_versions, venv=old_env)
        envs = {
            "new": (str(new_env / "bin" / "python"), new_versions),
            "old": (str(old_env / "bin" / "python"), old_versions),
        }
        combos = [
            {k: (side if k == kind else other) for k in COMPAT_KINDS}
            for kind in COMPAT_KINDS
            for side, other in (("new", "old"), ("old", "new"))
        ]
        results = []
        for i, combo in enumerate(combos, 1):
            parts = []
            for kind, side in combo.items():
                versions = envs[side][1]
                parts.append(
                    f"{kind} {side.upper()} ({PACKAGES[kind]} {versions[PACKAGES[kind]]}, "
                    f"core {versions['distributed-core']})"
                )
            label = f"compat {i}/{len(combos)}: " + " + ".join(parts)
            session.log("=" * 20 + f" {label}")
            cwd = workdir / f"run-{i}"
            cwd.mkdir()
            start = time.monotonic()
            problems = _compat_cluster(session, {k: envs[s][0] for k, s in combo.items()}, cwd)
            took = f"in {time.monotonic() - start:.1f}s"
            if problems:
                session.warn(f"{label}: FAILED {took}\n" + "\n\n".join(problems))
            else:
                session.log(f"{label}: ok {took}")
            results.append((label, problems))
        session.log("compat summary:")
        for label, problems in results:
            session.log(f"  {'FAIL' if problems else 'ok  '}  {label}")
        failed = [label for label, problems in results if problems]
        if failed:
            session.error(
                f"{len(failed)} of {len(results)} mixed-version clusters failed:\n  "
                + "\n  ".join(failed)
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
