"""The dashboard as a person sees it: headless Chromium against a real cluster.

Start a center and two workers (processes), open the status page, check the
workers table, run a map and watch the task stream gain rectangles, kill -9 a
worker and watch it leave within the heartbeat timeout, and check that the
browser console has no errors. Screenshots go to the artifacts directory
(the ``artifacts`` fixture); with DASHBOARD_DOCS_SCREENSHOT=path one is also
written there (docs/_static/dashboard.png is made that way).
"""

from __future__ import annotations

import os
import shutil
import signal
import time

from distributed_client import Executor

HEARTBEAT_TIMEOUT = 2.0  # the cluster fixture's --heartbeat-timeout


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.1)


# The page re-renders every second: read it with one script each time, so that
# no element found by one call is stale by the next.


def js(driver, script):
    return driver.execute_script(script)


def table_addresses(driver):
    return sorted(js(driver, "return [...document.querySelectorAll('#workers tbody tr')]"
                             ".map((r) => r.dataset.address)"))  # fmt: skip


def n_rects(driver):
    return js(driver, "return document.querySelectorAll('#task-stream rect.task').length")


def text(driver, selector):
    return js(driver, f"return document.querySelector({selector!r}).innerText")


def total(driver, label):
    """The figure shown above `label` in the totals bar."""
    for box in js(driver, "return [...document.querySelectorAll('#totals div')]"
                          ".map((d) => d.innerText)"):  # fmt: skip
        figure, _, name = box.partition("\n")
        if name == label:
            return figure
    return None


def console_errors(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_status_page_task_stream_and_worker_leaving(cluster, browser, artifacts):
    address, url, workers = cluster(2)
    browser.get(url)
    expected = sorted(w.address for w in workers)
    wait(lambda: table_addresses(browser) == expected, 15, "both workers in the table")
    table = text(browser, "#workers tbody")
    assert "w0" in table and "w1" in table

    with Executor(address) as ex:
        assert n_rects(browser) == 0
        # a builtin: this module is not importable on the workers (importlib mode)
        futures = ex.map(time.sleep, [0.05 + i * 1e-6 for i in range(300)])  # distinct keys; ~4 s
        first = wait(lambda: n_rects(browser), 20, "task stream rectangles")
        wait(lambda: n_rects(browser) > first, 20, "more task stream rectangles")
        assert [f.result() for f in futures] == [None] * 300
        wait(lambda: n_rects(browser) == 300, 10, "a rectangle for every task")
    wait(lambda: total(browser, "Completed") == "300", 10, "300 completed tasks in the totals")
    shot = artifacts / "dashboard-running.png"
    browser.save_screenshot(str(shot))
    docs_shot = os.environ.get("DASHBOARD_DOCS_SCREENSHOT")
    if docs_shot:
        shutil.copyfile(shot, docs_shot)

    victim = workers[0]
    victim.kill()
    killed = time.monotonic()
    # dropped after heartbeat_timeout of silence, seen by the page at its next poll (1 s)
    wait(lambda: table_addresses(browser) == [workers[1].address],
         HEARTBEAT_TIMEOUT + 5, "the killed worker leaving the table")  # fmt: skip
    left_after = time.monotonic() - killed
    print(f"killed worker left the page after {left_after:.1f}s")
    events = text(browser, "#events")
    assert "worker-dropped" in events and victim.address in events
    browser.save_screenshot(str(artifacts / "dashboard-worker-left.png"))

    # a worker that stops answering without closing its connection (SIGSTOP: as a
    # vanished host) leaves after heartbeat_timeout of silence
    frozen = workers[1]
    frozen.p.send_signal(signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        wait(lambda: table_addresses(browser) == [], HEARTBEAT_TIMEOUT + 5,
             "the frozen worker leaving the table")  # fmt: skip
        print(f"frozen worker left the page after {time.monotonic() - stopped:.1f}s "
              f"(heartbeat_timeout {HEARTBEAT_TIMEOUT}s)")  # fmt: skip
    finally:
        frozen.p.send_signal(signal.SIGCONT)
    assert "nothing heard for 2s" in text(browser, "#events")
    assert console_errors(browser) == []


def test_page_with_a_secret_needs_the_token(cluster, browser, tmp_path, artifacts):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    center_args = ("--secret-file", str(secret))
    address, url, _ = cluster(0, *center_args)
    assert "?token=" in url
    bare = url.split("?")[0]
    browser.get(bare)
    assert "needs a token" in browser.page_source
    browser.get(url)  # the link dcenter printed
    wait(lambda: "updated" in text(browser, "#status"), 10, "page polling")
    browser.get(bare)  # now the cookie opens it
    wait(lambda: "updated" in text(browser, "#status"), 10, "cookie works")
    browser.save_screenshot(str(artifacts / "dashboard-token.png"))
    errors = [e for e in console_errors(browser) if "403" not in e["message"]]
    assert errors == []
