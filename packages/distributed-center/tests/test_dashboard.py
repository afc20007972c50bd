"""The dashboard's HTTP side against a real Center on 127.0.0.1: JSON API,
/metrics (parsed with prometheus_client), /health, the token flow, HTTPS, ports."""

from __future__ import annotations

import json
import socket
import ssl

import pytest
import tornado.httpclient
from prometheus_client.parser import text_string_to_metric_families

from distributed_center import Center
from distributed_center.dashboard import parse_dashboard_address
from distributed_center.dashboard.auth import dashboard_token
from distributed_core import Security, config
from distributed_core.testing import gen_test

A = "tcp://127.0.0.1:1001"


async def fetch(url, **kwargs):
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        return await client.fetch(url, raise_error=False, **kwargs)
    finally:
        client.close()


def base(center):
    return center.dashboard.url.split("?")[0]


@gen_test()
async def test_api_metrics_health(running_center, fake_worker):
    async with running_center(dashboard_address="127.0.0.1:0") as center:
        assert center.dashboard.url.startswith("http://127.0.0.1:")
        async with fake_worker(center.address, A) as w:
            reply = await w.register(keys=["a"], ncores=3, name="w1", nbytes={"a": 100})
            assert reply["task_events"] == 1
            await w.heartbeat(memory=5000, executing=2)
            await w.send({"op": "task_events", "events": [
                ["inc-1", 10.0, 10.5, "dworker-compute_0", "OK", 28],
                ["inc-2", 10.5, 11.0, "dworker-compute_1", "error", 0],
                ["transfer", "tcp://127.0.0.1:1002", 1, 2048, 10.0, 10.1],
            ]})  # fmt: skip
            await w.unregister()  # ordered after the messages above
            await w.wait_closed()
        async with fake_worker(center.address, A) as w:
            await w.register(keys=["a"], ncores=3, name="w1", nbytes={"a": 100})
            await w.heartbeat(memory=5000, executing=2)
            await w.send({"op": "heartbeat"})
            url = base(center)

            r = await fetch(url + "api/v1/workers")
            assert r.code == 200 and r.headers["Content-Type"] == "application/json"
            data = json.loads(r.body)
            (row,) = data["workers"]
            assert row["address"] == A and row["name"] == "w1" and row["ncores"] == 3
            assert row["keys"] == 1 and row["managed"] == 100
            assert data["totals"]["workers"] == 1 and data["totals"]["ncores"] == 3
            assert data["center"]["tasks_completed"] == 1 and data["center"]["tasks_erred"] == 1

            stream = json.loads((await fetch(url + "api/v1/task-stream?since=0")).body)
            assert [t[4] for t in stream["tasks"]] == ["inc-1", "inc-2"]
            assert stream["tasks"][0][3] == "inc" and stream["tasks"][1][7] == "error"
            again = json.loads(
                (await fetch(url + f"api/v1/task-stream?since={stream['cursor']}")).body
            )
            assert again["tasks"] == []

            events = json.loads((await fetch(url + "api/v1/events")).body)["events"]
            kinds = [e["kind"] for e in events]
            assert kinds[:3] == ["worker-joined", "task-erred", "worker-left"]
            assert kinds[-1] == "worker-joined"

            keys = json.loads((await fetch(url + "api/v1/keys")).body)
            assert keys["workers"][A] == {"count": 1, "keys": ["a"]}

            assert (await fetch(url + "api/v1/task-stream?since=x")).code == 400
            assert (await fetch(url + "api/v1/nothing")).code == 404
            post = await fetch(url + "api/v1/workers", method="POST", body=b"{}")
            assert post.code == 405  # read-only

            r = await fetch(url + "metrics")
            assert r.code == 200 and r.headers["Content-Type"].startswith("text/plain")
            metrics = {}
            for family in text_string_to_metric_families(r.body.decode()):
                for sample in family.samples:
                    metrics[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
            assert metrics[("distributed_workers", ())] == 1
            assert metrics[("distributed_cores", ())] == 3
            assert metrics[("distributed_keys", ())] == 1
            assert metrics[("distributed_bytes", ())] == 100
            assert metrics[("distributed_tasks_completed_total", ())] == 1
            assert metrics[("distributed_tasks_erred_total", ())] == 1
            assert metrics[("distributed_transfer_bytes_total", ())] == 2048
            assert metrics[("distributed_worker_memory_bytes", (("worker", A),))] == 5000
            assert metrics[("distributed_worker_heartbeat_age_seconds", (("worker", A),))] >= 0
            assert ("distributed_event_loop_lag_seconds", ()) in metrics

            health = await fetch(url + "health")
            assert health.code == 200 and json.loads(health.body)["status"] == "ok"
            page = await fetch(url)
            assert page.code == 200 and b"/static/dashboard.js" in page.body
            js = await fetch(url + "static/dashboard.js")
            assert js.code == 200 and b"/api/v1/task-stream" in js.body
            assert (await fetch(url + "static/nothing.js")).code == 404
    assert center.dashboard is not None and center.dashboard.server is None  # closed


@gen_test()
async def test_token_flow_with_a_secret(running_center):
    security = Security(secret="s3cret")
    async with running_center(dashboard_address="127.0.0.1:0", security=security) as center:
        token = dashboard_token(b"s3cret")
        assert center.dashboard.url.endswith(f"?token={token}")
        url = base(center)
        r = await fetch(url)
        assert r.code == 403 and b"needs a token" in r.body and b"dcenter status" in r.body
        assert (await fetch(url + "api/v1/workers")).code == 403
        assert (await fetch(url + "metrics")).code == 403
        assert (await fetch(url + "?token=wrong")).code == 403
        r = await fetch(url + f"?token={token}")
        assert r.code == 200
        cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "distributed_dashboard_token=" in cookie
        cookie_header = cookie.split(";", 1)[0]
        r = await fetch(url + "api/v1/workers", headers={"Cookie": cookie_header})
        assert r.code == 200
        r = await fetch(url + "metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.code == 200
        bad = await fetch(
            url + "api/v1/workers", headers={"Cookie": "distributed_dashboard_token=x"}
        )
        assert bad.code == 403
        assert (await fetch(url + "health")).code == 200  # no token for load balancers


@gen_test()
async def test_https_with_tls(running_center, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    key_file, ca_file = tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    security = Security(tls_cert=str(key_file), tls_key=str(key_file), tls_ca_file=str(ca_file))
    async with running_center(
        "tls://127.0.0.1:0", dashboard_address="127.0.0.1:0", security=security
    ) as center:
        url = base(center)
        assert url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(ca_file))
        r = await fetch(url + "health", ssl_options=ctx)
        assert r.code == 200
        try:
            plain = (await fetch(url.replace("https", "http") + "health")).code
        except OSError:  # the TLS server resets a plain-HTTP connection
            plain = None
        assert plain != 200


def test_parse_dashboard_address():
    assert parse_dashboard_address(":9000", "h") == ("h", 9000, True)
    assert parse_dashboard_address("9000", "h") == ("h", 9000, True)
    assert parse_dashboard_address("[::1]:9000", "h") == ("::1", 9000, True)
    assert parse_dashboard_address("", "h") == ("h", 8788, False)
    for bad in ("nope", "h:99999", "h:x"):
        with pytest.raises(ValueError, match="dashboard address"):
            parse_dashboard_address(bad, "h")


@gen_test()
async def test_busy_default_port_is_replaced_explicit_busy_port_fails(running_center, monkeypatch):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    monkeypatch.setenv("DISTRIBUTED_DASHBOARD__PORT", str(port))
    config.reset()
    try:
        async with running_center(dashboard_address="") as center:
            assert center.dashboard.port not in (port, 0)
        center = Center(dashboard_address=f"127.0.0.1:{port}")
        with pytest.raises(OSError, match="choose another --dashboard-address"):
            await center.listen("tcp://127.0.0.1:0")
        await center.close()
    finally:
        busy.close()
        monkeypatch.delenv("DISTRIBUTED_DASHBOARD__PORT")
        config.reset()


@gen_test()
async def test_task_events_riding_on_add_keys(running_center, fake_worker, wait_until):
    async with running_center(dashboard_address="127.0.0.1:0") as center:
        async with fake_worker(center.address, A) as w:
            await w.register()
            await w.send({"op": "add_keys", "keys": ["inc-1"], "nbytes": {"inc-1": 28},
                          "tasks": [["inc-1", 1.0, 2.0, "t0", "OK", 28]]})  # fmt: skip
            await wait_until(lambda: center.events.tasks_completed == 1)
            assert center.state.who_has(["inc-1"]) == {"inc-1": [A]}
            (event,) = center.events.tasks
            assert (event.worker, event.key, event.thread) == (A, "inc-1", "t0")


@gen_test()
async def test_no_task_events_asked_without_a_dashboard(running_center, fake_worker):
    async with running_center() as center, fake_worker(center.address, A) as w:
        reply = await w.register()
        assert "task_events" not in reply
