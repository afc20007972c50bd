"""Sphinx configuration for the distributed docs."""

project = "distributed"
author = "the distributed developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.doctest"]
exclude_patterns = ["_build", "dev"]
html_theme = "alabaster"
autodoc_member_order = "bysource"
nitpicky = False
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]
doctest_global_setup = (
    "from distributed_core import *\nfrom distributed_core.protocol import Decoder, pack_frames"
)
