"""Sphinx configuration for the distributed docs."""

import inspect
import re

project = "distributed"
author = "the distributed developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.doctest"]
exclude_patterns = ["_build", "dev"]
html_theme = "alabaster"
autodoc_member_order = "bysource"
nitpicky = False
# `name` in docstrings: a cross-reference where the name is documented, else code
default_role = "py:obj"
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

# Every doctest (in the pages and in the docstrings that autodoc pulls in)
# starts with the public names of the four packages imported.
# The nodes' warnings (a worker lost when a cluster closes, a refused peer in
# the security example) would go to stderr; keep the build output clean.
doctest_global_setup = """
import logging
for _name in ("distributed_core", "distributed_center", "distributed_worker",
              "distributed_client"):
    logging.getLogger(_name).addHandler(logging.NullHandler())
from distributed_core import *
from distributed_core.protocol import Decoder, pack_frames
from distributed_center import Center, CenterState, WorkerInfo
from distributed_worker import DataStore, Worker
from distributed_client import *
"""

# Some docstrings write their parameters as ``name: description`` on one
# line, and some end their Parameters section with a paragraph of prose.
# Napoleon reads numpy-style ``name : type`` and takes every unindented line of
# the section for a parameter, so the description would show up as the type
# and the prose as parameters. Before napoleon sees a docstring, rewrite
# ``name: description`` as ``name`` plus the indented description, and move
# prose that follows the parameters (an unindented line that names no
# parameter of the signature) in front of the section.
_SECTION_UNDERLINE = re.compile(r"^\s*-{3,}\s*$")
_PARAM_LINE = re.compile(r"^([\w*][\w*, ]*?)\s*(?::\s*(.*))?$")


def _parameter_names(obj):
    try:
        return {name.lstrip("*") for name in inspect.signature(obj).parameters}
    except (TypeError, ValueError):
        return None


def _is_param(line, names):
    match = _PARAM_LINE.match(line)
    if not match:
        return None
    given = [n.strip().lstrip("*") for n in match.group(1).split(",")]
    if names is not None and not all(n in names for n in given):
        return None
    return match


def _fix_params(app, what, name, obj, options, lines):
    names = _parameter_names(obj)
    out, moved = [], []
    section_at = None  # index in out of the current Parameters header
    in_prose = False
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and _SECTION_UNDERLINE.match(lines[i + 1]):
            if moved:
                out[section_at:section_at] = [*moved, ""]
                moved = []
            is_params = line.strip() in ("Parameters", "Other Parameters")
            section_at = len(out) if is_params else None
            in_prose = False
            out.append(line)
            continue
        if section_at is None or _SECTION_UNDERLINE.match(line):
            out.append(line)
            continue
        if line and not line[0].isspace():
            match = _is_param(line, names)
            in_prose = in_prose or match is None
            if not in_prose:
                params, text = match.groups()
                out.append(params.strip())
                if text:
                    out.append("    " + text)
                continue
        (moved if in_prose else out).append(line)
    if moved:
        while out and not out[-1].strip():
            out.pop()
        out[section_at:section_at] = [*moved, ""]
    lines[:] = out


def setup(app):
    # before napoleon (priority 500), which turns the sections into fields
    app.connect("autodoc-process-docstring", _fix_params, priority=400)
