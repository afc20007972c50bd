#!/usr/bin/env python3
"""Check that each package's imports agree with what its pyproject.toml declares.

Usage: ``python tools/check_deps.py`` (from anywhere). Exit status 0 when all
is well (a summary table is printed), 1 with one message per problem.

Rules, for every ``packages/<dist>/``:

1. **Siblings.** Code under ``src/`` imports no sibling package but
   ``distributed_core`` (center, worker and client are independent of each
   other). Running a sibling as ``python -m <sibling>`` is allowed when that
   sibling is declared (in the dependencies or an extra). Code under
   ``tests/`` may import a sibling only when it is declared in the
   dependencies or in the ``test`` extra; the same holds for a sibling the
   tests run, directly (``"-m", "distributed_center"``) or through a public
   class or function of a ``src/`` module that runs it (``LocalCluster``).
2. **Third-party imports are declared.** Found with :mod:`ast`, each import
   is classified by how it runs:

   ``required``  module level, not in ``try/except ImportError``, in a module
                 that importing the package (or running its ``__main__`` or
                 console scripts) imports: must be in ``[project].dependencies``.
   ``lazy``      inside a function, or at module level of a module nothing
                 imports eagerly: dependencies or an extra users can install
                 (any extra but ``test``).
   ``guarded``   inside ``try/except ImportError`` (it has a fallback):
                 dependencies or any extra.
   ``test``      anything under ``tests/`` (``pytest.importorskip`` included:
                 a test that skips in CI tests nothing): dependencies or the
                 ``test`` extra.

   Imports under ``if TYPE_CHECKING:`` are ignored. An extra may include
   another extra of the same package (``distributed-client[local]``).
   Import names are mapped to distributions with a small explicit table, then
   :func:`importlib.metadata.packages_distributions` (what is installed in the
   interpreter running this script), then by assuming they are the same.

Declared runtime dependencies that nothing imports are reported as notes
(they do not fail the check: a dependency may be needed for other reasons).
Environment markers are not evaluated.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    try:
        import tomli as tomllib
    except ImportError:
        sys.exit("check_deps: needs Python >= 3.11 (tomllib), or tomli installed on 3.10")

ROOT = Path(__file__).resolve().parent.parent
PACKAGES_DIR = ROOT / "packages"
CORE_IMPORT = "distributed_core"

#: import name -> distribution, where they differ and the installed metadata
#: may not tell (the distribution is not installed where this runs).
IMPORT_TO_DIST = {
    "yaml": "PyYAML",
    "PIL": "Pillow",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "cv2": "opencv-python",
    "dateutil": "python-dateutil",
    "zmq": "pyzmq",
    "bs4": "beautifulsoup4",
    "attr": "attrs",
    "jwt": "PyJWT",
    "OpenSSL": "pyOpenSSL",
    "serial": "pyserial",
    "tlz": "toolz",
    "_pytest": "pytest",
    "pkg_resources": "setuptools",
}

GUARD_EXCEPTIONS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
KINDS = ("required", "lazy", "guarded", "test")


def normalize(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


_REQ = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def parse_requirement(text: str) -> tuple[str, list[str]]:
    """``'dask[array,bag]>=2024; python_version>"3"'`` -> ``('dask', ['array', 'bag'])``."""
    m = _REQ.match(text)
    if not m:
        raise ValueError(f"cannot parse requirement {text!r}")
    extras = [e.strip() for e in (m.group(2) or "").split(",") if e.strip()]
    return normalize(m.group(1)), extras


# -- packages ---------------------------------------------------------------------


@dataclass
class Package:
    dist: str  # as written in pyproject.toml
    root: Path
    imports: set[str]  # top-level import names provided by src/
    deps: set[str]  # normalized
    extras: dict[str, set[str]]  # extra -> normalized names (self-references expanded)
    scripts: list[str]  # modules named by [project.scripts]
    requirements: dict[str, str]  # normalized name -> requirement text, as written

    @property
    def name(self) -> str:
        return normalize(self.dist)

    def declared_in(self, dists: set[str]) -> list[str]:
        """Where any of ``dists`` is declared: 'dependencies' and/or '[extra]'."""
        where = []
        if dists & self.deps:
            where.append("dependencies")
        where += [f"[{e}]" for e, names in sorted(self.extras.items()) if dists & names]
        return where


def load_package(root: Path) -> Package:
    with open(root / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    dist = project["name"]
    own = normalize(dist)
    deps = {parse_requirement(r)[0] for r in project.get("dependencies", [])}
    raw_extras = {
        e: [parse_requirement(r) for r in reqs]
        for e, reqs in project.get("optional-dependencies", {}).items()
    }

    def expand(extra: str, seen: set[str]) -> set[str]:
        names = set()
        for name, sub in raw_extras.get(extra, []):
            if name == own:  # an extra that includes other extras of this package
                for e in sub:
                    if e not in seen:
                        names |= expand(e, seen | {e})
            else:
                names.add(name)
        return names

    extras = {e: expand(e, {e}) for e in raw_extras}
    src = root / "src"
    imports = (
        {p.name for p in src.iterdir() if (p / "__init__.py").exists()} if src.is_dir() else set()
    )
    imports |= {p.stem for p in src.glob("*.py")} if src.is_dir() else set()
    scripts = [target.split(":")[0] for target in project.get("scripts", {}).values()]
    requirements = {}
    for text in [*project.get("dependencies", [])] + [
        r for reqs in project.get("optional-dependencies", {}).values() for r in reqs
    ]:
        name, _ = parse_requirement(text)
        if name != own:
            requirements.setdefault(name, re.split(r"\s*;", text)[0].strip())
    return Package(dist, root, imports, deps, extras, scripts, requirements)


# -- finding imports ----------------------------------------------------------------


@dataclass
class Use:
    module: str  # full dotted name as imported ("dask.array")
    file: Path
    line: int
    in_function: bool = False
    guarded: bool = False
    as_main: bool = False  # ["-m", module]: run as a subprocess, not imported

    @property
    def top(self) -> str:
        return self.module.split(".")[0]

    def where(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    for t in types:
        name = t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else ""
        if name in GUARD_EXCEPTIONS:
            return True
    return False


class _Finder(ast.NodeVisitor):
    """Collects the imports of one module with their context."""

    def __init__(self, file: Path, module: str, is_package: bool):
        self.file = file
        self.module = module  # dotted name of this module ("" outside src/)
        self.is_package = is_package
        self.uses: list[Use] = []
        self.function = 0
        self.guard = 0

    def _add(self, module: str, node, **kw):
        self.uses.append(
            Use(module, self.file, node.lineno, self.function > 0, self.guard > 0, **kw)
        )

    def _resolve(self, level: int, module: str | None) -> str:
        parts = self.module.split(".") if self.module else []
        if not self.is_package:
            parts = parts[:-1]
        if level > 1:
            parts = parts[: len(parts) - (level - 1)]
        return ".".join(parts + ([module] if module else []))

    def visit_Import(self, node):
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node):
        if node.module == "__future__":
            return
        if node.level:
            if not self.module:  # relative import outside src/: a local test helper
                return
            base = self._resolve(node.level, node.module)
            # `from . import x` may import the submodule x
            for alias in node.names:
                self._add(f"{base}.{alias.name}", node)
            self._add(base, node)
        else:
            self._add(node.module, node)
            for alias in node.names:
                self._add(f"{node.module}.{alias.name}", node)

    def _function(self, node):
        self.function += 1
        self.generic_visit(node)
        self.function -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node):
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Try(self, node):
        guarded = any(_catches_import_error(h) for h in node.handlers)
        self.guard += guarded
        for child in node.body:
            self.visit(child)
        for handler in node.handlers:
            self.visit(handler)
        self.guard -= guarded
        for child in node.orelse + node.finalbody:
            self.visit(child)

    visit_TryStar = visit_Try

    def visit_Call(self, node):
        # pytest.importorskip("x") and importlib.import_module("x")
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if (
            name in ("importorskip", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            self.guard += name == "importorskip"
            self._add(node.args[0].value, node)
            self.guard -= name == "importorskip"
        self.generic_visit(node)

    def _sequence(self, node):
        # [sys.executable, "-m", "module", ...]: the module runs in a subprocess
        items = node.elts
        for a, b in zip(items, items[1:]):
            if (
                isinstance(a, ast.Constant)
                and a.value == "-m"
                and isinstance(b, ast.Constant)
                and isinstance(b.value, str)
            ):
                self._add(b.value, b, as_main=True)
        self.generic_visit(node)

    visit_List = visit_Tuple = _sequence


def module_name(file: Path, src: Path) -> tuple[str, bool]:
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def parse(file: Path) -> ast.Module:
    try:
        return ast.parse(file.read_text("utf-8"), str(file))
    except SyntaxError as e:
        raise SystemExit(f"check_deps: cannot parse {file.relative_to(ROOT)}: {e}") from None


def scan(file: Path, tree: ast.Module, module: str = "", is_package: bool = False) -> list[Use]:
    finder = _Finder(file, module, is_package)
    finder.visit(tree)
    return finder.uses


def defined_names(tree: ast.Module) -> set[str]:
    """Classes and functions a module defines at top level."""
    kinds = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {n.name for n in tree.body if isinstance(n, kinds) and not n.name.startswith("_")}


def used_names(tree: ast.Module) -> set[str]:
    """Every identifier a module mentions (names, attributes, imported names)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[-1])
    return names


# -- classification -------------------------------------------------------------------


def eager_modules(pkg: Package, modules: dict[str, list[Use]]) -> set[str]:
    """Modules that importing the package (or running its entry points) imports."""
    roots = [m for m in modules if "." not in m]  # the top-level packages
    roots += [m for m in modules if m.endswith(".__main__")]
    roots += [m for m in pkg.scripts if m in modules]
    reached: set[str] = set()
    todo = list(roots)
    while todo:
        m = todo.pop()
        if m in reached:
            continue
        reached.add(m)
        parts = m.split(".")
        todo += [
            ".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in modules
        ]
        for use in modules[m]:
            if not (use.in_function or use.guarded or use.as_main) and use.module in modules:
                todo.append(use.module)
    return reached


_STDLIB = set(sys.stdlib_module_names) | {"__main__"}


def dist_candidates(top: str, installed: dict[str, list[str]]) -> tuple[set[str], str]:
    """Normalized distribution names that may provide import ``top``, and how we know."""
    if top in IMPORT_TO_DIST:
        return {normalize(IMPORT_TO_DIST[top])}, "table"
    if installed.get(top):
        return {normalize(d) for d in installed[top]}, "installed"
    return {normalize(top)}, "assumed"


@dataclass
class Row:
    package: str
    import_name: str
    dist: str
    kind: str
    declared: str
    uses: int


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    siblings: list[Row] = field(default_factory=list)


_ALL: list[Package] = []


def requirement_text(dist: str) -> str:
    """How the packages already spell a requirement on ``dist`` (to reuse its bounds)."""
    for pkg in _ALL:
        text = pkg.requirements.get(dist)
        if text is not None:
            return re.sub(r"\[[^\]]*\]", "", text)  # without extras
    siblings = {p.name: p.dist for p in _ALL}
    if dist in siblings:  # bound it like the siblings already required
        for pkg in _ALL:
            for name, text in pkg.requirements.items():
                if name in siblings:
                    return siblings[dist] + _REQ.sub("", text, count=1)
        return siblings[dist]
    spelled = {normalize(d): d for d in IMPORT_TO_DIST.values()}
    return spelled.get(dist, dist)


def check(packages: list[Package]) -> Report:
    _ALL[:] = packages
    report = Report()
    installed = importlib.metadata.packages_distributions()
    by_import = {imp: p for p in packages for imp in p.imports}

    for pkg in packages:
        src = pkg.root / "src"
        modules: dict[str, list[Use]] = {}
        # names of public classes/functions whose module runs `python -m <sibling>`
        runs_sibling: dict[str, set[str]] = defaultdict(set)
        for file in sorted(src.rglob("*.py")):
            name, is_package = module_name(file, src)
            tree = parse(file)
            modules[name] = scan(file, tree, name, is_package)
            for use in modules[name]:
                if use.as_main and use.top in by_import:
                    runs_sibling[use.top] |= defined_names(tree)
        eager = eager_modules(pkg, modules)

        tests = pkg.root / "tests"
        test_files = sorted(tests.rglob("*.py")) if tests.is_dir() else []
        local_test_names = {f.stem for f in test_files} | (
            {d.name for d in tests.rglob("*") if d.is_dir()} if tests.is_dir() else set()
        )

        # (top-level import, kind) -> uses
        found: dict[tuple[str, str], list[Use]] = defaultdict(list)
        for mod, uses in modules.items():
            for use in uses:
                if use.as_main:
                    kind = "main"
                elif use.guarded:
                    kind = "guarded"
                elif use.in_function or mod not in eager:
                    kind = "lazy"
                else:
                    kind = "required"
                found[(use.top, kind)].append(use)
        for file in test_files:
            tree = parse(file)
            for use in scan(file, tree):
                found[(use.top, "test-main" if use.as_main else "test")].append(use)
            # tests that use e.g. LocalCluster need the siblings it starts
            names = used_names(tree)
            for top, defined in runs_sibling.items():
                hits = sorted(names & defined)
                if hits:
                    via = Use(f"{top} (via {', '.join(hits)})", file, 1)
                    found[(top, "test-main")].append(via)

        src_dists_used: set[str] = set()
        for (top, kind), uses in sorted(found.items()):
            if top in _STDLIB or top in pkg.imports:
                continue
            if kind == "test" and top in local_test_names:
                continue  # a helper module next to the tests
            sibling = by_import.get(top)
            if sibling is not None:
                _check_sibling(report, pkg, sibling, top, kind, uses)
                if not kind.startswith("test"):
                    src_dists_used.add(sibling.name)
                continue
            if kind in ("main", "test-main"):
                continue  # `-m some_tool`: not a package's import
            dists, how = dist_candidates(top, installed)
            if kind != "test":
                src_dists_used |= dists
            declared = pkg.declared_in(dists)
            ok = _covered(kind, declared)
            if not ok:
                report.problems.append(_problem(pkg, top, dists, how, kind, declared, uses))
            # one table row per import and kind
            report.rows.append(
                Row(
                    pkg.dist,
                    top,
                    "/".join(sorted(dists)) + (" (assumed)" if how == "assumed" else ""),
                    kind,
                    ", ".join(declared) or "-",
                    len(uses),
                )
            )

        for dep in sorted(pkg.deps - src_dists_used):
            report.notes.append(
                f"{pkg.dist}: dependency {dep!r} is declared in [project].dependencies but "
                "nothing under src/ imports it"
            )
    return report


def _covered(kind: str, declared: list[str]) -> bool:
    if "dependencies" in declared:
        return True
    if kind == "required":
        return False
    if kind == "lazy":
        return any(d != "[test]" for d in declared)
    if kind == "guarded":
        return bool(declared)
    if kind == "test":
        return "[test]" in declared
    raise AssertionError(kind)


def _problem(pkg, top, dists, how, kind, declared, uses) -> str:
    dist = requirement_text(sorted(dists)[0])
    first = uses[0].where() + (f" (and {len(uses) - 1} more)" if len(uses) > 1 else "")
    found_in = f"; it is only declared in {', '.join(declared)}" if declared else ""
    guess = (
        f" (distribution name assumed equal to the import name; if it is not, add "
        f"{top!r} to IMPORT_TO_DIST in tools/check_deps.py)"
        if how == "assumed"
        else ""
    )
    fix = {
        "required": f'add "{dist}" to [project].dependencies',
        "lazy": f'add "{dist}" to [project].dependencies or to an extra users can install '
        "(not only [test])",
        "guarded": f'add "{dist}" to [project].dependencies or to an extra',
        "test": f'add "{dist}" to [project.optional-dependencies].test',
    }[kind]
    what = {
        "required": "at import time",
        "lazy": "lazily",
        "guarded": "optionally",
        "test": "in its tests",
    }[kind]
    return (
        f"{pkg.dist}: imports {top!r} {what} at {first}{found_in}; "
        f"fix: {fix} in {pkg.root.relative_to(ROOT)}/pyproject.toml{guess}"
    )


def _via(uses) -> str:
    out = []
    for use in uses[:3]:
        if " (via " in use.module:
            out.append(f"{use.file.relative_to(ROOT)} uses {use.module.split(' (via ')[1][:-1]}")
        else:
            out.append(use.where())
    return "; ".join(out) + (f"; and {len(uses) - 3} more" if len(uses) > 3 else "")


def _check_sibling(report: Report, pkg: Package, sibling: Package, top, kind, uses) -> None:
    first = uses[0].where() + (f" (and {len(uses) - 1} more)" if len(uses) > 1 else "")
    declared = pkg.declared_in({sibling.name})
    where = f"{pkg.root.relative_to(ROOT)}/pyproject.toml"
    status = "ok"
    if kind == "test-main":
        if not ({"dependencies", "[test]"} & set(declared)):
            status = "undeclared"
            also = f" (it is declared in {', '.join(declared)})" if declared else ""
            extras = [d for d in declared if d.startswith("[")]
            fix = (
                f'"{pkg.dist}[{extras[0][1:-1]}]" (the extra that declares it)'
                if extras
                else f'"{requirement_text(sibling.name)}"'
            )
            report.problems.append(
                f"{pkg.dist}: its tests run sibling {top!r} as `python -m {top}` "
                f"({_via(uses)}) but the [test] extra does not declare {sibling.dist}{also}; "
                f"fix: add {fix} to [project.optional-dependencies].test in {where}"
            )
    elif kind == "main":
        if not declared:
            status = "undeclared"
            report.problems.append(
                f"{pkg.dist}: runs `python -m {top}` at {first} but does not declare "
                f"{sibling.dist}; fix: add it to an extra (or the dependencies) in {where}"
            )
    elif kind == "test":
        if not ({"dependencies", "[test]"} & set(declared)):
            status = "undeclared"
            also = f" (it is declared in {', '.join(declared)})" if declared else ""
            report.problems.append(
                f"{pkg.dist}: its tests import sibling {top!r} at {first} but the [test] extra "
                f"does not declare {sibling.dist}{also}; fix: add "
                f'"{requirement_text(sibling.name)}" to [project.optional-dependencies].test '
                f"in {where}"
            )
    elif top != CORE_IMPORT:
        status = "forbidden"
        report.problems.append(
            f"{pkg.dist}: src imports sibling {top!r} at {first}; packages may only import "
            f"{CORE_IMPORT} (run it as a subprocess with `python -m {top}`, or move the shared "
            f"code into {CORE_IMPORT})"
        )
    elif "dependencies" not in declared:
        status = "undeclared"
        report.problems.append(
            f"{pkg.dist}: imports {CORE_IMPORT} at {first} but does not list distributed-core "
            f"in [project].dependencies in {where}"
        )
    report.siblings.append(
        Row(pkg.dist, top, sibling.dist, kind, ", ".join(declared) or "-", len(uses))
    )
    if status != "ok":
        report.siblings[-1].declared += f"  <- {status}"


# -- output ----------------------------------------------------------------------------


def table(rows: list[Row], headers: tuple[str, ...]) -> str:
    cells = [headers] + [
        (r.package, r.import_name, r.dist, r.kind, r.declared, str(r.uses)) for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cells[0], widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for c in cells[1:]:
        lines.append("  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip())
    return "\n".join(lines)


def main() -> int:
    roots = sorted(p for p in PACKAGES_DIR.iterdir() if (p / "pyproject.toml").exists())
    if not roots:
        print(
            f"check_deps: no packages with a pyproject.toml under {PACKAGES_DIR}", file=sys.stderr
        )
        return 1
    packages = [load_package(r) for r in roots]
    report = check(packages)
    order = {k: i for i, k in enumerate(KINDS)}
    report.rows.sort(key=lambda r: (r.package, order.get(r.kind, 9), r.import_name))
    report.siblings.sort(key=lambda r: (r.package, r.kind, r.import_name))

    heads = ("package", "import", "distribution", "used as", "declared in", "uses")
    print("Third-party imports\n")
    print(table(report.rows, heads))
    print("\nSibling packages\n")
    print(
        table(report.siblings, ("package", "import", "sibling", "used as", "declared in", "uses"))
    )
    for note in report.notes:
        print(f"\nnote: {note}")
    if report.problems:
        print(f"\ncheck_deps: {len(report.problems)} problem(s):", file=sys.stderr)
        for p in report.problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"\ncheck_deps: OK ({len(packages)} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
