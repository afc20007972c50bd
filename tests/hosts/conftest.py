"""Fixtures for tests on simulated hosts (network namespaces; see harness.py).

* ``hosts`` -- a factory: ``hosts(n, ipv6=False)`` starts a `harness.Hosts`
  that is closed (every process killed, every namespace, veth, bridge and rule
  removed) after the test, whatever its outcome.

Test modules here import the harness with ``from harness import ...`` (this
file puts its directory on ``sys.path``; pytest's importlib mode does not) and
mark themselves ``pytestmark = needs_hosts`` so they skip, with the reason,
where namespaces cannot be created.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Hosts  # noqa: E402


@pytest.fixture
def hosts():
    """``hosts(n, ipv6=False) -> Hosts``, started now, closed at teardown."""
    made: list[Hosts] = []

    def make(n: int, ipv6: bool = False) -> Hosts:
        h = Hosts(n, ipv6=ipv6)
        made.append(h)
        return h.start()

    yield make
    for h in reversed(made):
        h.close()
