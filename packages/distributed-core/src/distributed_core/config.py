"""Every tunable of the cluster, read in one place.

Each value comes from the first of these that sets it:

1. a command-line flag (``dcenter --heartbeat-timeout 10``; the CLIs take
   their defaults from :func:`get`, so a flag always wins);
2. an environment variable ``DISTRIBUTED_<SECTION>__<NAME>``, e.g.
   ``DISTRIBUTED_TIMEOUTS__HEARTBEAT_TIMEOUT=10`` (:func:`env_var`);
3. the file named by ``DISTRIBUTED_CONFIG`` (several separated by ``:``, later
   ones win), then the files ``~/.config/distributed/*.toml``, ``*.yaml``,
   ``*.yml`` (``$XDG_CONFIG_HOME/distributed`` when that is set), read in
   name order, later ones winning;
4. the default in :data:`SCHEMA`.

Components (``Center``, ``Worker``, ``Executor``) use :func:`get` for the
parameters left as None.

A file holds sections (TOML tables or YAML mappings)::

    [timeouts]
    heartbeat_timeout = 10

    [dashboard]
    port = 9000

An unknown key, an unknown ``DISTRIBUTED_*__*`` variable or a bad value
raises :class:`ConfigError`, one line naming the key, where it came from and
what was expected. Environment variables starting with ``DISTRIBUTED_`` but
without ``__`` are not configuration and are left alone.

The library: the standard library's ``tomllib`` (``tomli``, its backport, on
Python 3.10) and a small schema here; YAML files need PyYAML (``pip install
pyyaml``), loaded only when such a file exists. donfig brings no types or
validation and pydantic-settings would pull pydantic into every process.

>>> from distributed_core import config
>>> config.get("timeouts.heartbeat_timeout", env={}, files=[])
5.0
>>> config.get("timeouts.heartbeat_timeout",
...            env={"DISTRIBUTED_TIMEOUTS__HEARTBEAT_TIMEOUT": "7.5"}, files=[])
7.5
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .timeouts import DEFAULTS, Timeouts

__all__ = [
    "SCHEMA",
    "Config",
    "ConfigError",
    "Setting",
    "config_files",
    "env_var",
    "get",
    "load",
    "markdown",
    "reset",
]

ENV_PREFIX = "DISTRIBUTED_"
CONFIG_ENV = "DISTRIBUTED_CONFIG"


class ConfigError(ValueError):
    """A configuration value or key that cannot be used; the message says which and where."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """One configuration key: its type, default and meaning."""

    key: str  # "section.name"
    kind: str  # "float", "int", "bool", "str", "path", "choice"
    default: Any
    description: str
    minimum: float | None = None  # values must be > minimum (or >= when min_closed)
    min_closed: bool = False
    choices: tuple = ()
    optional: bool = False  # None (TOML: leave the key out; env: empty string) allowed

    @property
    def env(self) -> str:
        return env_var(self.key)

    def expected(self) -> str:
        """What a valid value looks like, for error messages and the docs."""
        if self.kind == "choice":
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.kind in ("float", "int"):
            text = "a number" if self.kind == "float" else "an integer"
            if self.minimum is not None:
                text += f" {'>=' if self.min_closed else '>'} {self.minimum:g}"
        elif self.kind == "bool":
            text = "a boolean (true/false)"
        elif self.kind == "path":
            text = "a file path"
        else:
            text = "a string"
        return text

    def convert(self, value: Any, source: str) -> Any:
        """Check and convert `value` (from a file, or a string from the environment)."""
        from_env = source.startswith("environment")
        if value is None or (from_env and value == "" and self.optional):
            if self.optional:
                return None
            self._bad(value, source)
        try:
            if self.kind == "bool":
                if isinstance(value, bool):
                    return value
                if from_env and isinstance(value, str):
                    low = value.strip().lower()
                    if low in ("1", "true", "yes", "on"):
                        return True
                    if low in ("0", "false", "no", "off"):
                        return False
                raise ValueError
            if self.kind in ("float", "int"):
                if isinstance(value, bool):
                    raise ValueError
                if isinstance(value, str):
                    if not from_env:
                        raise ValueError
                    value = float(value) if self.kind == "float" else int(value)
                if self.kind == "int":
                    if isinstance(value, float) and not value.is_integer():
                        raise ValueError
                    value = int(value)
                elif not isinstance(value, (int, float)):
                    raise ValueError
                else:
                    value = float(value)
                if self.minimum is not None and (
                    value < self.minimum or (value == self.minimum and not self.min_closed)
                ):
                    raise ValueError
                return value
            if not isinstance(value, str):
                raise ValueError
            if self.kind == "choice":
                low = value.lower()
                if low not in self.choices:
                    raise ValueError
                return low
            if self.kind == "path":
                return str(Path(value).expanduser())
            return value
        except (ValueError, OverflowError):
            self._bad(value, source)

    def _bad(self, value: Any, source: str):
        raise ConfigError(
            f"bad value for config key {self.key!r} in {source}: expected "
            f"{self.expected()}, got {type(value).__name__} {value!r:.80}"
        )


_TIMEOUT_HELP = {
    "connect_timeout": "Seconds to open a connection (and finish its handshake).",
    "heartbeat_interval": "Seconds between heartbeats on a worker's report stream, both ways.",
    "heartbeat_timeout": "Seconds of silence after which the center drops a worker "
    "(and a worker treats its center as gone).",
    "fetch_timeout": "Seconds of silence after which a peer fetch fails.",
    "center_timeout": "Seconds a client call waits for the center.",
    "no_workers_timeout": "Seconds a task waits for a live worker.",
    "client_timeout": "Seconds without a heartbeat after which the center releases "
    "a client's data.",
    "allowed_failures": "Deaths of a task's worker before the task raises KilledWorker.",
    "tcp_keepalive_idle": "Seconds of silence before TCP keepalive probes start.",
    "tcp_keepalive_interval": "Seconds between TCP keepalive probes.",
    "tcp_keepalive_count": "Unanswered keepalive probes that drop a connection.",
    "tcp_user_timeout": "Seconds unacknowledged data may wait (TCP_USER_TIMEOUT); 0 disables.",
}


def _timeouts() -> list[Setting]:
    settings = []
    for field in dataclasses.fields(Timeouts):
        default = getattr(DEFAULTS, field.name)
        is_int = isinstance(default, int)
        zero_ok = field.name in ("tcp_user_timeout", "allowed_failures")
        settings.append(
            Setting(
                f"timeouts.{field.name}",
                "int" if is_int else "float",
                default,
                _TIMEOUT_HELP[field.name],
                minimum=0,
                min_closed=zero_ok,
            )
        )
    return settings


#: every key, in documentation order
SCHEMA: dict[str, Setting] = {
    s.key: s
    for s in [
        *_timeouts(),
        Setting("center.host", "str", None, "Interface dcenter listens on.", optional=True),
        Setting(
            "center.port",
            "int",
            8787,
            "Port dcenter listens on (0: a free one).",
            minimum=0,
            min_closed=True,
        ),
        Setting(
            "worker.port",
            "int",
            0,
            "Port dworker listens on (0: a free one).",
            minimum=0,
            min_closed=True,
        ),
        Setting(
            "worker.ncores",
            "int",
            None,
            "Compute threads per worker (default: the number of CPUs).",
            minimum=1,
            min_closed=True,
            optional=True,
        ),
        Setting(
            "worker.resources",
            "str",
            None,
            'Abstract resources a worker declares, e.g. "GPU=2,MEM=8e9" (tasks asking for '
            "resources run only where they are free).",
            optional=True,
        ),
        Setting(
            "center.max_upload_bytes",
            "int",
            64 * 2**20,
            "Total bytes of files (Executor.upload_file) the center keeps to give to workers "
            "that join later.",
            minimum=0,
            min_closed=True,
        ),
        Setting("dashboard.enabled", "bool", True, "Serve the dashboard from the center."),
        Setting(
            "dashboard.host",
            "str",
            None,
            "Interface the dashboard listens on (default: the center's).",
            optional=True,
        ),
        Setting(
            "dashboard.port",
            "int",
            8788,
            "Dashboard port; when this default is busy a "
            "free one is used, an explicit busy port is an error.",
            minimum=0,
            min_closed=True,
        ),
        Setting(
            "dashboard.task_events",
            "int",
            100_000,
            "Task-stream events the center keeps (a ring buffer; about 350-480 bytes each, 35-48 MB when full).",
            minimum=1,
            min_closed=True,
        ),
        Setting(
            "dashboard.cluster_events",
            "int",
            1000,
            "Cluster events (joined, left, errors) the center keeps.",
            minimum=1,
            min_closed=True,
        ),
        Setting(
            "logging.level",
            "choice",
            None,
            "Log level (default: info for dcenter, warning for dworker, so that a worker's "
            "start-up error stays one line).",
            choices=("debug", "info", "warning", "error"),
            optional=True,
        ),
        Setting(
            "logging.format",
            "choice",
            "text",
            "Log line format: text or json (one JSON object per line).",
            choices=("text", "json"),
        ),
        Setting(
            "security.secret_file",
            "path",
            None,
            "File holding the cluster's shared secret.",
            optional=True,
        ),
        Setting(
            "security.insecure",
            "bool",
            False,
            "Run without a shared secret even where one would be used by default.",
        ),
        Setting(
            "security.tls_cert", "path", None, "PEM certificate; enables tls://.", optional=True
        ),
        Setting("security.tls_key", "path", None, "PEM private key of tls_cert.", optional=True),
        Setting(
            "security.tls_ca_file", "path", None, "PEM CA file to verify peers with.", optional=True
        ),
        Setting(
            "security.require_client_cert",
            "bool",
            False,
            "Refuse TLS peers without a certificate signed by tls_ca_file.",
        ),
        Setting(
            "client.address",
            "str",
            None,
            "Center address an Executor or Pool connects to when given none "
            "(default: none, then they start a LocalCluster of their own).",
            optional=True,
        ),
        Setting(
            "limits.max_frames",
            "int",
            100_000,
            "Most frames one message may have.",
            minimum=1,
            min_closed=True,
        ),
        Setting(
            "limits.max_message_bytes",
            "int",
            None,
            "Largest message accepted, bytes (default: half the machine's memory).",
            minimum=1,
            min_closed=True,
            optional=True,
        ),  # fmt: skip
    ]
}


# --------------------------------------------------------------------------- sources


def env_var(key: str) -> str:
    """The environment variable of `key`: ``'timeouts.connect_timeout'`` ->
    ``'DISTRIBUTED_TIMEOUTS__CONNECT_TIMEOUT'``."""
    return ENV_PREFIX + key.upper().replace(".", "__")


def config_files(env: Mapping[str, str] | None = None) -> list[Path]:
    """The files read, lowest precedence first."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    directory = Path(base) / "distributed"
    files: list[Path] = []
    if directory.is_dir():
        files = sorted(
            p for p in directory.iterdir() if p.suffix in (".toml", ".yaml", ".yml") and p.is_file()
        )
    extra = env.get(CONFIG_ENV)
    if extra:
        files.extend(Path(p).expanduser() for p in extra.split(os.pathsep) if p)
    return files


def _read_file(path: Path) -> dict:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                f"config file {path} is YAML, which needs PyYAML: pip install pyyaml "
                f"(or write it as TOML)"
            ) from None
        try:
            loaded = yaml.safe_load(data) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    else:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib
        try:
            loaded = tomllib.loads(data.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"config file {path} must hold sections like [timeouts], got {type(loaded).__name__}"
        )
    return loaded


def _flatten(data: dict, path: Path) -> dict[str, Any]:
    flat = {}
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(
                f"unknown config key {section!r} in config file {path}: keys go in sections, e.g. "
                f"[timeouts] heartbeat_timeout = 10; known sections: {_sections()}"
            )
        for name, value in values.items():
            flat[f"{section}.{name}"] = value
    return flat


def _sections() -> str:
    return ", ".join(dict.fromkeys(k.split(".")[0] for k in SCHEMA))


def _unknown(key: str, source: str) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(key, SCHEMA, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; see docs/configuration.md"
    return ConfigError(f"unknown config key {key!r} in {source}{hint}")


# --------------------------------------------------------------------------- values


class Config:
    """Values from the environment and files, with where each came from."""

    def __init__(self, values: dict[str, Any], sources: dict[str, str]):
        self.values = values
        self.sources = sources

    def get(self, key: str) -> Any:
        if key not in SCHEMA:
            raise KeyError(f"unknown config key {key!r}")
        return self.values.get(key, SCHEMA[key].default)

    def is_set(self, key: str) -> bool:
        """True when the environment or a file set `key` (not only its default)."""
        return key in self.values

    def source(self, key: str) -> str:
        return self.sources.get(key, "default")


def load(env: Mapping[str, str] | None = None, files: list[Path | str] | None = None) -> Config:
    """Read the files (default :func:`config_files`) and the environment."""
    env = os.environ if env is None else env
    files = config_files(env) if files is None else [Path(f) for f in files]
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for path in files:
        for key, raw in _flatten(_read_file(path), path).items():
            if key not in SCHEMA:
                raise _unknown(key, f"config file {path}")
            source = f"config file {path}"
            values[key] = SCHEMA[key].convert(raw, source)
            sources[key] = source
    by_env = {s.env: s for s in SCHEMA.values()}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name[len(ENV_PREFIX) :]:
            continue
        setting = by_env.get(name)
        if setting is None:
            key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            raise _unknown(key, f"environment variable {name}")
        source = f"environment variable {name}"
        values[setting.key] = setting.convert(raw, source)
        sources[setting.key] = source
    return Config(values, sources)


_loaded: Config | None = None


def _current() -> Config:
    global _loaded
    if _loaded is None:
        _loaded = load()
    return _loaded


def reset() -> None:
    """Forget the values read, so the next :func:`get` reads the environment and files again."""
    global _loaded
    _loaded = None


def get(key: str, *, env: Mapping[str, str] | None = None, files=None) -> Any:
    """The value of `key` (``'section.name'``) from the environment, files or default.

    Without `env` and `files` the process environment and the files are read
    once and cached (:func:`reset` forgets them).
    """
    if env is None and files is None:
        return _current().get(key)
    return load(env, files).get(key)


def default(key: str, error: type[Exception] = ConfigError) -> Callable[[], Any]:
    """A callable for a click option's ``default=``: evaluated when the CLI runs,
    reading the environment and files afresh (not the cache of :func:`get`).

    A bad configuration raises `error` with the message of the `ConfigError`
    (the CLIs pass ``click.UsageError``: one line and exit status 2).
    """

    def value():
        try:
            return load().get(key)
        except ConfigError as e:
            raise error(str(e)) from None

    return value


# --------------------------------------------------------------------------- docs


def markdown() -> str:
    """``docs/configuration.md``, generated from :data:`SCHEMA`."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated by `python -m distributed_core.config > docs/configuration.md`;",
        "     a test checks that this page matches the schema. Do not edit by hand. -->",
        "",
        "Every tunable is read in one place, `distributed_core.config`, in this order "
        "(the first that sets a value wins):",
        "",
        "1. a command-line flag (`dcenter --heartbeat-timeout 10`);",
        "2. an environment variable `DISTRIBUTED_<SECTION>__<NAME>`, e.g. "
        "`DISTRIBUTED_TIMEOUTS__HEARTBEAT_TIMEOUT=10` (an empty value sets an optional key "
        "to none);",
        f"3. the files in `${CONFIG_ENV}` (separated by `{os.pathsep}`), then "
        "`~/.config/distributed/*.toml`, `*.yaml`, `*.yml` (`$XDG_CONFIG_HOME/distributed` "
        "when set), later files winning;",
        "4. the default below.",
        "",
        "A file holds sections:",
        "",
        "```toml",
        "[timeouts]",
        "heartbeat_timeout = 10",
        "",
        "[dashboard]",
        "port = 9000",
        "```",
        "",
        "An unknown key (in a file, or a `DISTRIBUTED_*__*` variable) or a bad value stops "
        "the program with one line naming the key, the file or variable, and the expected "
        "type. YAML files need PyYAML (`pip install pyyaml`). The library: the standard "
        "library's `tomllib` (its backport `tomli` on Python 3.10) and a small schema in "
        "`distributed_core.config`; donfig has no types or validation, and pydantic-settings "
        "would add pydantic to every process.",
        "",
    ]
    section = None
    for s in SCHEMA.values():
        sec = s.key.split(".")[0]
        if sec != section:
            section = sec
            lines += [
                f"## `[{sec}]`",
                "",
                "| Key | Default | Environment variable | Type | Description |",
                "| --- | --- | --- | --- | --- |",
            ]
        default = "none" if s.default is None else f"`{s.default!r}`".replace("'", '"')
        if isinstance(s.default, bool):
            default = f"`{str(s.default).lower()}`"
        lines.append(
            f"| `{s.key}` | {default} | `{s.env}` | {s.expected()}"
            f"{' or none' if s.optional else ''} | {s.description} |"
        )
        if (
            s is list(SCHEMA.values())[-1]
            or list(SCHEMA)[list(SCHEMA).index(s.key) + 1].split(".")[0] != sec
        ):
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(markdown())
