"""Sphinx configuration for the distributed docs."""

project = "distributed"
author = "the distributed developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.doctest"]
exclude_patterns = ["_build", "dev"]
html_theme = "alabaster"
autodoc_member_order = "bysource"
nitpicky = False
