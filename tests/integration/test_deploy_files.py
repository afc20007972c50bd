"""The files of deploy/ and docs/deploy.md work with the installed CLIs.

* ``deploy/make-certs.sh`` (openssl) makes certificates with which a mutual-TLS
  cluster starts and computes;
* every ``dcenter`` / ``dworker`` option used in deploy/ (systemd units, the
  Slurm script, the Kubernetes manifests, the Dockerfile) exists in that
  command's ``--help``, so a renamed option fails here, not in production.

The Kubernetes manifests are validated against the Kubernetes schema by
``nox -s release`` (kubernetes-validate); the Dockerfile is built there only
where a container engine answers.
"""

from __future__ import annotations

import operator
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distributed_client import Executor
from distributed_core import Security

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def test_make_certs_gives_a_working_mutual_tls_cluster(procs, tmp_path, home_dir):
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    out = subprocess.run(
        ["sh", str(DEPLOY / "make-certs.sh"), str(tmp_path / "certs"), "127.0.0.1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    certs = tmp_path / "certs"
    assert oct((certs / "node.pem").stat().st_mode & 0o777) == "0o600"
    node, ca = str(certs / "node.pem"), str(certs / "ca.pem")
    tls = ["--tls-cert", node, "--tls-key", node, "--tls-ca-file", ca]
    center = procs(
        "center", "distributed_center", "--host", "127.0.0.1", "--port", "0", *tls,
        "--require-client-cert", home=home_dir,
    )  # fmt: skip
    address = center.wait_line("Start center at ")
    assert address.startswith("tls://")
    worker = procs(
        "worker", "distributed_worker", address, "--host", "127.0.0.1", *tls, home=home_dir
    )
    worker.wait_line("Registered with center at ")
    security = Security(tls_cert=node, tls_key=node, tls_ca_file=ca)
    with Executor(address, security=security) as e:
        assert [f.result() for f in e.map(operator.neg, range(5))] == [0, -1, -2, -3, -4]


@pytest.fixture
def home_dir(tmp_path):
    path = tmp_path / "home"
    path.mkdir()
    return path


def _options_used() -> dict[str, set[str]]:
    """{"dcenter": {--opt, ...}, "dworker": {...}} from the files in deploy/."""
    used: dict[str, set[str]] = {"dcenter": set(), "dworker": set()}
    for path in sorted(DEPLOY.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text()
        if path.suffix == ".yaml":  # args lists: the command is the image's or `command:`
            for doc in text.split("\n---"):
                cmd = "dcenter" if '["dcenter"]' in doc else "dworker"
                used[cmd] |= set(re.findall(r'"(--[a-z-]+)"', doc))
            continue
        for line in text.splitlines():
            if line.lstrip().startswith("#"):
                continue
            for cmd in used:
                if re.search(rf"\b{cmd}\b", line):
                    after = line.split(cmd, 1)[1]
                    used[cmd] |= set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", after))
    return used


def test_every_option_in_deploy_files_exists():
    used = _options_used()
    assert "--secret-file" in used["dcenter"] and "--port" in used["dworker"], used
    for cmd, module in (("dcenter", "distributed_center"), ("dworker", "distributed_worker")):
        help_text = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60
        ).stdout
        missing = sorted(opt for opt in used[cmd] if opt not in help_text)
        assert not missing, f"{cmd} has no option(s) {missing} used in deploy/"
