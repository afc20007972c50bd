"""The tornado web application: pages, JSON API, ``/metrics`` and ``/health``.

Read-only: every handler answers GET (and HEAD) only; nothing here changes
the cluster. With a shared secret every path but ``/health`` needs the token
(:mod:`.auth`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import tornado.escape
import tornado.web

from . import auth
from .metrics import CONTENT_TYPE, render
from .views import totals, workers_table

__all__ = ["make_app"]

logger = logging.getLogger("distributed_center.dashboard")

STATIC = Path(__file__).parent / "static"

FORBIDDEN = """<!doctype html><html><head><meta charset="utf-8">
<link rel="icon" href="data:,"><title>Dashboard: token needed</title></head><body>
<h1>403: this dashboard needs a token</h1>
<p>The cluster uses a shared secret, so its dashboard opens only with the token derived
from it. Open the link <code>dcenter</code> printed at start-up
(<code>Dashboard at http://...?token=...</code>), or get it with
<code>dcenter status CENTER_ADDRESS --secret-file FILE</code>.
The token is then kept in a cookie.</p>
<p>{reason}</p></body></html>"""


class Base(tornado.web.RequestHandler):
    def initialize(self, dashboard):
        self.dashboard = dashboard
        self.center = dashboard.center

    def set_default_headers(self):
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")

    def prepare(self):
        expected = self.dashboard.token
        if expected is None:
            return
        given = self.get_query_argument("token", None)
        if given is not None:
            if auth.check(expected, given):
                self.set_cookie(
                    auth.COOKIE, given, httponly=True, samesite="Strict",
                    secure=self.request.protocol == "https",
                )  # fmt: skip
                return
            return self._forbid("The token in the URL is wrong.")
        header = self.request.headers.get("Authorization", "")
        if header.lower().startswith(("bearer ", "token ")):
            given = header.split(None, 1)[1].strip()
        else:
            given = self.get_cookie(auth.COOKIE)
        if given is None:
            return self._forbid("No token was given (no ?token= in the URL, no cookie).")
        if not auth.check(expected, given):
            return self._forbid("The token given is wrong (an old cookie? the secret changed?).")

    def _forbid(self, reason: str):
        self.set_status(403)
        if self.request.path.startswith(("/api/", "/metrics")):
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"error": "forbidden", "reason": reason,
                                    "how": "pass ?token=... or Authorization: Bearer ..."}))  # fmt: skip
        else:
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish(FORBIDDEN.format(reason=tornado.escape.xhtml_escape(reason)))

    def write_json(self, data):
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))

    def int_arg(self, name: str, default: int) -> int:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise tornado.web.HTTPError(400, f"{name} must be an integer, got {raw!r}") from None
        if value < 0:
            raise tornado.web.HTTPError(400, f"{name} must be >= 0, got {value}")
        return value


class Page(Base):
    def get(self):
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish((STATIC / "index.html").read_bytes())


class Static(Base):
    TYPES = {".js": "application/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

    def get(self, name):
        path = STATIC / name
        if name not in self.dashboard.static_files:
            raise tornado.web.HTTPError(404)
        self.set_header("Content-Type", self.TYPES.get(path.suffix, "application/octet-stream"))
        self.finish(path.read_bytes())


class Workers(Base):
    def get(self):
        rows = workers_table(self.center.state.workers(), time.time())
        self.write_json({"workers": rows, "totals": totals(rows), "center": self._center()})

    def _center(self):
        c = self.center
        return {
            "address": c.address,
            "keys": c.state.n_keys,
            "heartbeat_interval": c.heartbeat_interval,
            "heartbeat_timeout": c.heartbeat_timeout,
            "tasks_completed": c.events.tasks_completed,
            "tasks_erred": c.events.tasks_erred,
            "transfer_bytes": c.events.transfer_bytes,
        }


class Keys(Base):
    def get(self):
        limit = self.int_arg("limit", 1000)
        worker = self.get_query_argument("worker", None)
        has_what = self.center.state.has_what([worker] if worker else None)
        out = {}
        for address, keys in has_what.items():
            out[address] = {"count": len(keys), "keys": [_key(k) for k in keys[:limit]]}
        self.write_json({"workers": out, "limit": limit})


class Events(Base):
    def get(self):
        since = self.int_arg("since", 0)
        events = self.center.events
        self.write_json({"events": events.cluster_since(since), "cursor": events.seq})


class TaskStream(Base):
    def get(self):
        since = self.int_arg("since", 0)
        limit = min(self.int_arg("limit", 5000), 50_000)
        tasks, cursor = self.center.events.tasks_since(since, limit)
        self.write_json(
            {
                "cursor": cursor,
                "now": time.time(),
                "fields": [
                    "seq",
                    "worker",
                    "thread",
                    "prefix",
                    "key",
                    "start",
                    "stop",
                    "status",
                    "nbytes",
                ],  # fmt: skip
                "tasks": [list(t) for t in tasks],
            }
        )


class Throughput(Base):
    def get(self):
        self.write_json({"samples": self.center.events.rates()})


class Metrics(Base):
    def get(self):
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(render(self.dashboard.registry))


class Favicon(Base):
    def prepare(self):  # browsers ask for it on every page, the 403 page included
        pass

    def get(self):
        self.set_status(204)
        self.finish()


class Health(Base):
    def prepare(self):  # no token: load balancers and orchestrators ask this
        pass

    def get(self):
        closing = self.center._center_closing
        self.set_status(503 if closing else 200)
        self.write_json({"status": "closing" if closing else "ok",
                         "workers": self.center.state.n_workers})  # fmt: skip


def _key(key):
    return key if isinstance(key, (str, int, float)) else repr(key)


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """Requests at DEBUG (the page polls every second), failures at WARNING."""
    status = handler.get_status()
    level = logging.DEBUG if status < 400 or status in (403, 404) else logging.WARNING
    logger.log(level, "%d %s %.1fms", status, handler.request.uri,
               1000.0 * handler.request.request_time())  # fmt: skip


def make_app(dashboard) -> tornado.web.Application:
    args = {"dashboard": dashboard}
    return tornado.web.Application(
        [
            (r"/", Page, args),
            (r"/status", Page, args),
            (r"/static/([a-z.\-]+)", Static, args),
            (r"/api/v1/workers", Workers, args),
            (r"/api/v1/keys", Keys, args),
            (r"/api/v1/events", Events, args),
            (r"/api/v1/task-stream", TaskStream, args),
            (r"/api/v1/throughput", Throughput, args),
            (r"/metrics", Metrics, args),
            (r"/health", Health, args),
            (r"/favicon.ico", Favicon, args),
        ],
        compress_response=False,
        log_function=_log_request,
        xsrf_cookies=False,
    )
