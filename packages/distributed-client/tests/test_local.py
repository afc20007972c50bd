"""LocalCluster: processes, addresses, start time, kill and close."""

from __future__ import annotations

import os
import time

import pytest

from distributed_client import Executor, LocalCluster


def inc(x):
    return x + 1


def test_start_to_first_result_and_close():
    t = time.perf_counter()
    with LocalCluster(n_workers=2, ncores=1) as cluster:
        with Executor(cluster.center_address) as e:
            assert e.submit(inc, 1).result() == 2
        elapsed = time.perf_counter() - t
        assert cluster.center_address.startswith("tcp://127.0.0.1:")
        assert len(cluster.worker_addresses) == 2
        assert len(set(cluster.worker_addresses)) == 2
        procs = [cluster.center_process, *cluster.worker_processes]
        assert "LocalCluster" in repr(cluster)
    for p in procs:
        assert p.poll() is not None  # all gone
    # generous bound for loaded CI machines; the benchmark measures the real figure
    assert elapsed < 10


def test_kill_and_add_worker():
    with LocalCluster(n_workers=2, ncores=2) as cluster:
        pid = cluster.worker_pid(0)
        address = cluster.kill_worker(0)
        assert address not in cluster.worker_addresses
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        new = cluster.add_worker()
        assert new in cluster.worker_addresses and len(cluster.worker_addresses) == 2


def test_bad_arguments():
    with pytest.raises(ValueError):
        LocalCluster(n_workers=-1)
    with pytest.raises(ValueError):
        LocalCluster(ncores=0)


def test_zero_workers_then_add():
    with LocalCluster(n_workers=0) as cluster:
        with Executor(cluster.center_address) as e:
            f = e.submit(inc, 1)
            time.sleep(0.1)
            assert not f.done()
            cluster.add_worker()
            assert f.result(timeout=20) == 2


def test_shared_secret():
    from distributed_core import Security

    sec = Security(secret="correct horse battery staple")
    with LocalCluster(n_workers=1, security=sec) as cluster:
        with Executor(cluster.center_address, security=sec) as e:
            assert e.submit(inc, 1).result() == 2
        from distributed_core import HandshakeError

        with pytest.raises(HandshakeError):
            Executor(cluster.center_address, timeout=1)


def test_tls(tmp_path):
    trustme = pytest.importorskip("trustme")
    from distributed_core import Security

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file = tmp_path / "ca.pem", tmp_path / "cert.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    sec = Security(tls_cert=str(cert_file), tls_key=str(cert_file), tls_ca_file=str(ca_file))
    with LocalCluster(n_workers=1, security=sec) as cluster:
        assert cluster.center_address.startswith("tls://")
        assert all(w.startswith("tls://") for w in cluster.worker_addresses)
        with Executor(cluster.center_address, security=sec) as e:
            x = e.submit(inc, 1)
            assert e.submit(inc, x).result() == 3


def test_asynchronous_local_cluster():
    import asyncio

    async def main():
        async with LocalCluster(n_workers=1, asynchronous=True) as cluster:
            assert cluster.status == "running"
            async with Executor(cluster.center_address, asynchronous=True) as e:
                assert await e.submit(inc, 1) == 2

    asyncio.run(main())
