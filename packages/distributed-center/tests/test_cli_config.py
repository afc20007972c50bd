"""dcenter as a real subprocess: configuration precedence, log formats, dcenter status."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from distributed_core.testing import free_port

CMD = [sys.executable, "-m", "distributed_center"]


def start(*args, env=None, lines=1):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DISTRIBUTED_")}
    full_env.update(env or {})
    proc = subprocess.Popen(
        [*CMD, "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
    )  # fmt: skip
    out = [proc.stdout.readline().strip() for _ in range(lines)]
    if not out[0].startswith("Start center at "):
        proc.kill()
        raise AssertionError(f"{out!r}: {proc.communicate(timeout=10)[1]}")
    return proc, out[0].split(" at ", 1)[1], out


def stop(proc):
    proc.terminate()
    try:
        return proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def status(*args, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DISTRIBUTED_")}
    full_env.update(env or {})
    return subprocess.run([*CMD, "status", *args], capture_output=True, text=True, timeout=60,
                          env=full_env, check=False)  # fmt: skip


def test_precedence_flag_env_file_default(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text(
        "[timeouts]\nheartbeat_interval = 0.5\nheartbeat_timeout = 9\n"
        "[dashboard]\nenabled = false\n"
    )
    env = {"DISTRIBUTED_CONFIG": str(f), "DISTRIBUTED_TIMEOUTS__HEARTBEAT_TIMEOUT": "7",
           "XDG_CONFIG_HOME": str(tmp_path / "none")}  # fmt: skip
    proc, address, _ = start("--heartbeat-interval", "0.25", env=env)
    try:
        result = status(address, "--json", env=env)
        assert result.returncode == 0, result.stderr
        center = json.loads(result.stdout)["center"]
        assert center["heartbeat_interval"] == 0.25  # flag beats file
        assert center["heartbeat_timeout"] == 7.0  # env beats file
    finally:
        out, err = stop(proc)
    assert "Dashboard at" not in out  # the file turned it off


@pytest.mark.parametrize(
    "env, words",
    [
        ({"DISTRIBUTED_TIMEOUTS__HEARTBEAT_TIMEOUT": "soon"},
         ["DISTRIBUTED_TIMEOUTS__HEARTBEAT_TIMEOUT", "'timeouts.heartbeat_timeout'", "a number"]),
        ({"DISTRIBUTED_DASHBOARD__PROT": "1"}, ["DISTRIBUTED_DASHBOARD__PROT", "'dashboard.prot'"]),
    ],
)  # fmt: skip
def test_bad_config_is_one_clear_error(env, words):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DISTRIBUTED_")}
    result = subprocess.run([*CMD, "--port", "0"], capture_output=True, text=True, timeout=60,
                            env={**full_env, **env}, check=False)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_bad_config_file_names_the_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[center]\nport = 'eighty'\n")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DISTRIBUTED_")}
    result = subprocess.run(CMD, capture_output=True, text=True, timeout=60, check=False,
                            env={**full_env, "DISTRIBUTED_CONFIG": str(f)})  # fmt: skip
    assert result.returncode == 2
    assert str(f) in result.stderr and "'center.port'" in result.stderr
    assert "an integer" in result.stderr


def test_json_log_format_and_level():
    proc, address, lines = start("--log-format", "json", "--log-level", "debug",
                                 "--no-dashboard")  # fmt: skip
    out, err = stop(proc)
    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert records, err
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any(r["level"] == "DEBUG" for r in records) or any(
        "listening" in r["message"] for r in records
    )
    assert any(r["logger"].startswith("distributed") for r in records)


def test_text_log_format():
    proc, address, _ = start("--no-dashboard")
    out, err = stop(proc)
    first = err.splitlines()[0]
    # "2026-11-30 05:40:01,123 INFO distributed_core.server: Center listening at ..."
    date, clock, level, logger = first.split(" ")[:4]
    assert level == "INFO" and logger.endswith(":") and date.count("-") == 2


def test_dashboard_line_and_status_table():
    proc, address, lines = start("--dashboard-address", "127.0.0.1:0", lines=2)
    try:
        assert lines[1].startswith("Dashboard at http://127.0.0.1:")
        result = status(address)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"Center {address}: 0 workers")
        assert "NAME" in result.stdout and "TOTAL" in result.stdout
    finally:
        stop(proc)


def test_status_unreachable_is_one_line_and_exit_1():
    port = free_port()
    result = status(f"tcp://127.0.0.1:{port}", "--timeout", "1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach the center at tcp://127.0.0.1:{port}" in lines[0]
