"""Sphinx configuration for the distributed docs."""

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
