"""parse_resources: the one parser of ``--resources`` and the ``resources=`` task option."""

from __future__ import annotations

import pytest

from distributed_core import parse_resources


@pytest.mark.parametrize(
    "given, expected",
    [
        ("GPU=2,MEM=8e9", {"GPU": 2.0, "MEM": 8e9}),
        (" GPU = 1 , ", {"GPU": 1.0}),
        ({"GPU": 1, "X": 0}, {"GPU": 1.0, "X": 0.0}),
        ("", None),
        (None, None),
    ],
)
def test_parses(given, expected):
    assert parse_resources(given) == expected


@pytest.mark.parametrize(
    "given, error, match",
    [
        ("GPU", ValueError, "NAME=AMOUNT pairs"),
        ("=2", ValueError, "NAME=AMOUNT pairs"),
        ("GPU=two", ValueError, "GPU='two' is not a number"),
        ("GPU=-1", ValueError, "must be a finite number >= 0"),
        ("GPU=inf", ValueError, "must be a finite number >= 0"),
        ("GPU=nan", ValueError, "must be a finite number >= 0"),
        ({"GPU": True}, ValueError, "is not a number"),
        ({1: 2}, TypeError, "resource names are non-empty strings"),
        (["GPU"], TypeError, "takes a dict"),
    ],
)
def test_errors_name_the_bad_part(given, error, match):
    with pytest.raises(error, match=match):
        parse_resources(given)
