"""Run a real Synapse as a subprocess for tests, benchmarks and demos."""

from __future__ import annotations

import atexit
import contextlib
import copy
import errno
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import IO, Any, Literal

from .client import Account, Client, MatrixUser, Response, quote
from .postgres import PostgresDatabase

__all__ = [
    "REPO_ROOT",
    "Homeserver",
    "HomeserverStartError",
    "deep_merge",
    "free_port",
    "port_in_use",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
"""Prepended to the subprocess's PYTHONPATH so ``synapse_syncv3`` imports uninstalled."""

_PORT_RANGE = (20000, 40000)
_RESERVED_PORTS = frozenset({8008, 8448})
_handed_out: set[int] = set()
_port_lock = threading.Lock()

_RATELIMIT = {"per_second": 100000, "burst_count": 100000}
# Checked against synapse/config/ratelimiting.py of 1.163.2 and 1.152.0. All are read by
# 1.163.2; 1.152.0 does not know rc_profile, and (verified) ignores it without complaint.
_FLAT_RATELIMITS = (
    "rc_message",
    "rc_registration",
    "rc_admin_redaction",
    "rc_joins_per_room",
    "rc_3pid_validation",
    "rc_key_requests",
    "rc_third_party_invite",
    "rc_media_create",
    "rc_delayed_event_mgmt",
    "rc_room_creation",
    "rc_reports",
    "rc_user_directory",
    "rc_profile",
)
_NESTED_RATELIMITS = {
    "rc_login": ("address", "account", "failed_attempts"),
    "rc_joins": ("local", "remote"),
    "rc_invites": ("per_room", "per_user", "per_issuer"),
    "rc_presence": ("per_user",),
}


def ratelimit_config() -> dict[str, Any]:
    """Every client-side rate limit Synapse reads, set high enough never to trigger."""
    config: dict[str, Any] = {key: dict(_RATELIMIT) for key in _FLAT_RATELIMITS}
    for key, subkeys in _NESTED_RATELIMITS.items():
        config[key] = {sub: dict(_RATELIMIT) for sub in subkeys}
    return config


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on (or has bound) ``host:port``.

    Binding uses SO_REUSEADDR like Twisted, so ports in TIME_WAIT (a server we just
    stopped) count as free.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        if s.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


_LISTEN_FAILURE = re.compile(r"Couldn't listen on [0-9.]+:([0-9]+)")


def _port_not_listened_on(output: str) -> int | None:
    """The port of Twisted's CannotListenError in a start-up's output, if any."""
    found = _LISTEN_FAILURE.findall(output)
    return int(found[-1]) if found else None


def _port_range() -> tuple[int, int]:
    """20000-40000 without the kernel's ephemeral range: an outgoing connection (to
    PostgreSQL, Redis, another server) may be given any port in that range, even
    between our choice and Synapse's bind."""
    low, high = _PORT_RANGE
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        ephemeral = (int(text[0]), int(text[1]))
    except (OSError, ValueError, IndexError):
        return low, high
    if ephemeral[0] > low + 1000:
        return low, min(high, ephemeral[0] - 1)
    if ephemeral[1] < high - 1000:
        return max(low, ephemeral[1] + 1), high
    return low, high


def free_port() -> int:
    """A port on 127.0.0.1 in 20000-40000, outside the ephemeral range, that is free now
    and not handed out before by this process (never 8008/8448)."""
    rng = random.SystemRandom()
    low, high = _port_range()
    with _port_lock:
        for _ in range(500):
            port = rng.randint(low, high)
            if port in _RESERVED_PORTS or port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            if port_in_use(port):
                continue
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port found in 20000-40000")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``override`` merged in: dicts recursively, anything else
    (lists included) replaced."""
    merged: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _tail(path: Path, lines: int, offset: int = 0) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


class HomeserverStartError(RuntimeError):
    """Synapse did not come up (or, for ``start_expecting_failure``, did)."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


NO_MODULE_CONFIG: Mapping[str, Any] = MappingProxyType({})
"""Default ``module_config``: load the module with an empty config."""

# Servers still running, killed at interpreter exit as a safety net.
_running: set[Homeserver] = set()


@atexit.register
def _kill_leftovers() -> None:
    for hs in list(_running):
        with contextlib.suppress(Exception):
            hs.kill()


class Homeserver:
    """One Synapse process on 127.0.0.1 with its own work directory and database.

    ``module_config`` defaults to ``{}``; ``None`` runs Synapse without the module.
    Passing ``postgres`` implies ``database="postgres"``; the caller owns (and drops) that
    database.
    """

    server_name = "localhost"

    def __init__(
        self,
        workdir: Path,
        *,
        database: Literal["sqlite", "postgres"] = "sqlite",
        postgres: PostgresDatabase | None = None,
        module_config: Mapping[str, Any] | None = NO_MODULE_CONFIG,
        module_name: str = "synapse_syncv3.SyncV3Module",
        extra_config: Mapping[str, Any] | None = None,
        python: str = sys.executable,
        port: int | None = None,
        presence: bool = True,
        name: str = "hs",
        env: Mapping[str, str] | None = None,
    ) -> None:
        if postgres is not None:
            database = "postgres"
        if database not in ("sqlite", "postgres"):
            raise ValueError(f"database must be 'sqlite' or 'postgres', not {database!r}")
        if database == "postgres" and postgres is None:
            raise ValueError("database='postgres' needs postgres=PostgresDatabase.create()")
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.database = database
        self.postgres = postgres
        self.module_config: dict[str, Any] | None = (
            None if module_config is None else copy.deepcopy(dict(module_config))
        )
        self.module_name = module_name
        self.extra_config: dict[str, Any] = dict(extra_config or {})
        self.python = python
        self.port = port if port is not None else free_port()
        #: The port was chosen here (not given), so a first start may choose another.
        self._port_chosen = port is None
        #: Set once the process answered: clients may know its ports from then on.
        self._started_once = False
        self.presence = presence
        self.name = name
        #: Extra environment variables of the Synapse process.
        self.env: dict[str, str] = dict(env or {})
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.registration_shared_secret = secrets.token_hex(16)
        self._macaroon_secret_key = secrets.token_hex(32)
        self._form_secret = secrets.token_hex(32)
        self.config_path = self.workdir / f"{name}.yaml"
        self.log_config_path = self.workdir / f"{name}.log.config"
        self.log_path = self.workdir / f"{name}.log"
        self.stdout_path = self.workdir / f"{name}.stdout"
        self.signing_key_path = self.workdir / f"{name}.signing.key"
        self.ready_seconds: float | None = None
        self.client = Client(self.base_url)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdout_file: IO[bytes] | None = None
        self._stdout_offset = 0
        self._admin: Account | None = None
        self._localpart_counter = 0

    def __repr__(self) -> str:
        return f"<Homeserver {self.name} {self.base_url} {self.database} pid={self.pid}>"

    # ------------------------------------------------------------------ config

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def database_config(self) -> dict[str, Any]:
        if self.postgres is not None:
            return self.postgres.synapse_database_config()
        return {"name": "sqlite3", "args": {"database": str(self.workdir / "homeserver.db")}}

    def log_config(self) -> dict[str, Any]:
        """Python logging dictConfig: INFO to ``<name>.log``, unbuffered."""
        return {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "precise": {
                    "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - "
                    "%(request)s - %(message)s"
                }
            },
            "filters": {"context": {"()": "synapse.logging.context.LoggingContextFilter"}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "precise",
                    "filters": ["context"],
                    "filename": str(self.log_path),
                    "encoding": "utf8",
                }
            },
            "loggers": {"synapse.storage.SQL": {"level": "WARNING"}},
            "root": {"level": "INFO", "handlers": ["file"]},
        }

    def config(self) -> dict[str, Any]:
        """The homeserver.yaml contents (generated config with ``extra_config`` merged over)."""
        config: dict[str, Any] = {
            "server_name": self.server_name,
            "public_baseurl": self.base_url + "/",
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client", "metrics"], "compress": False}],
                }
            ],
            "enable_metrics": True,
            "database": self.database_config(),
            "log_config": str(self.log_config_path),
            "media_store_path": str(self.workdir / "media_store"),
            "signing_key_path": str(self.signing_key_path),
            "macaroon_secret_key": self._macaroon_secret_key,
            "form_secret": self._form_secret,
            "registration_shared_secret": self.registration_shared_secret,
            "report_stats": False,
            "enable_registration": False,
            "allow_guest_access": True,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_domain_whitelist": [],
            "url_preview_enabled": False,
            "presence": {"enabled": self.presence},
            "caches": {"sync_response_cache_duration": 0},
            "bcrypt_rounds": 4,
            "refresh_token_lifetime": "24h",
            # Fresh databases queue ~40 background updates; with the default 1 s sleep
            # between batches they would trickle on for a minute during the tests.
            "background_updates": {"sleep_enabled": False},
            **ratelimit_config(),
        }
        if self.module_config is not None:
            config["modules"] = [{"module": self.module_name, "config": self.module_config}]
        return deep_merge(config, self.extra_config)

    def _ensure_signing_key(self) -> None:
        if self.signing_key_path.exists():
            return
        try:
            from signedjson.key import generate_signing_key, write_signing_keys
        except ImportError:
            code = (
                "import sys\n"
                "from signedjson.key import generate_signing_key, write_signing_keys\n"
                "with open(sys.argv[1], 'w') as f:\n"
                "    write_signing_keys(f, [generate_signing_key('a_test')])\n"
            )
            subprocess.run([self.python, "-c", code, str(self.signing_key_path)], check=True)
            return
        with self.signing_key_path.open("w") as f:
            write_signing_keys(f, [generate_signing_key("a_test")])

    def write_config(self) -> Path:
        """Write homeserver.yaml (as JSON), the log config and, if missing, a signing key."""
        self._ensure_signing_key()
        self.log_config_path.write_text(json.dumps(self.log_config(), indent=2) + "\n")
        self.config_path.write_text(json.dumps(self.config(), indent=2) + "\n")
        return self.config_path

    # --------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The command line of the Synapse process (a worker runs another app)."""
        return [self.python, "-m", "synapse.app.homeserver", "-c", str(self.config_path)]

    def _spawn(self) -> subprocess.Popen[bytes]:
        if self.running:
            raise HomeserverStartError(f"{self!r} is already running")
        self._reap()
        if port_in_use(self.port):
            raise HomeserverStartError(
                f"port {self.port} is already in use; refusing to start {self.name} "
                "(a readiness poll would reach the other server)"
            )
        self.write_config()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        self._stdout_file = self.stdout_path.open("ab")
        self._stdout_offset = self._stdout_file.tell()
        argv = self.command()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=self._stdout_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except BaseException:
            self._stdout_file.close()
            self._stdout_file = None
            raise
        self._proc = proc
        _running.add(self)
        return proc

    def _versions_ok(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.settimeout(2)
                s.sendall(b"GET /_matrix/client/versions HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                head = s.recv(64)
        except OSError:
            return False
        return head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200"))

    def output_since_start(self) -> str:
        """stdout+stderr of the current (or last) run."""
        return _tail(self.stdout_path, 10**9, self._stdout_offset)

    def _failure_report(self, headline: str) -> str:
        return (
            f"{headline}\n--- last 40 lines of {self.stdout_path} ---\n"
            f"{_tail(self.stdout_path, 40, self._stdout_offset)}\n"
            f"--- last 40 lines of {self.log_path} ---\n{_tail(self.log_path, 40)}"
        )

    def start(self, timeout: float = 60) -> None:
        """Start Synapse and wait until ``/_matrix/client/versions`` answers 200."""
        started = time.monotonic()
        self._spawn()
        self.wait_ready(timeout, started)

    def wait_ready(self, timeout: float = 60, started: float | None = None) -> None:
        """Wait until the spawned process answers ``/_matrix/client/versions``.

        A first start that could not listen on a port this harness chose (another
        process took it between the choice and Synapse's bind) is retried on new ports,
        up to three times; anything else raises HomeserverStartError.
        """
        started = time.monotonic() if started is None else started
        deadline = started + timeout
        retries = 3
        while True:
            proc = self._proc
            if self._versions_ok():
                self.ready_seconds = time.monotonic() - started
                self._started_once = True
                return
            code = proc.poll() if proc is not None else -1
            if code is not None:
                report = self._failure_report(
                    f"Synapse {self.name} exited with code {code} during start-up"
                )
                port = _port_not_listened_on(self.output_since_start())
                self._reap()
                if retries and port is not None and self._choose_new_port(port):
                    retries -= 1
                    self._spawn()
                    continue
                raise HomeserverStartError(report, exit_code=code)
            if time.monotonic() > deadline:
                report = self._failure_report(
                    f"Synapse {self.name} not ready after {timeout:.0f} s; killed it"
                )
                self.kill()
                raise HomeserverStartError(report)
            time.sleep(0.05)

    def _choose_new_port(self, port: int) -> bool:
        """Replace ``port`` (one Synapse could not listen on) with a free one; False when
        the port was given by the caller or clients may already know it (the process
        answered before)."""
        if self._started_once or not self._port_chosen or port != self.port:
            return False
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        return True

    def start_expecting_failure(self, timeout: float = 60) -> tuple[int, str]:
        """Run Synapse expecting it to exit (e.g. on a config error).

        Returns ``(exit code, stdout+stderr)``. Raises HomeserverStartError (after killing it)
        if it answers ``/versions`` or still runs after ``timeout``.
        """
        started = time.monotonic()
        proc = self._spawn()
        while True:
            code = proc.poll()
            if code is not None:
                self._reap()
                return code, self.output_since_start()
            if self._versions_ok():
                self.kill()
                raise HomeserverStartError(
                    f"Synapse {self.name} started successfully, but a failure was expected"
                )
            if time.monotonic() - started > timeout:
                self.kill()
                raise HomeserverStartError(
                    f"Synapse {self.name} still running after {timeout:.0f} s; killed it"
                )
            time.sleep(0.05)

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
        if self._proc is None:
            _running.discard(self)
            if self._stdout_file is not None:
                self._stdout_file.close()
                self._stdout_file = None

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._proc.pid, sig)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Idempotent."""
        proc = self._proc
        if proc is not None:
            self._signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                proc.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILL and wait. Idempotent."""
        proc = self._proc
        if proc is not None:
            self._signal(signal.SIGKILL)
            proc.wait()
        self._reap()

    def restart(self, kill: bool = False, timeout: float = 60) -> None:
        """Stop (or kill) and start again: same port, config, secrets and database."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start(timeout)

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log_path, lines)

    def __enter__(self) -> Homeserver:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- accounts

    def _new_localpart(self) -> str:
        self._localpart_counter += 1
        return f"u{secrets.token_hex(5)}{self._localpart_counter}"

    def register(
        self,
        localpart: str | None = None,
        password: str = "pw",
        admin: bool = False,
        displayname: str | None = None,
    ) -> Account:
        """Register through the shared-secret admin API; returns the new account."""
        localpart = localpart or self._new_localpart()
        path = "/_synapse/admin/v1/register"
        nonce = self.client.get(path, token=None).expect(200, "register nonce")["nonce"]
        mac = hmac.new(self.registration_shared_secret.encode(), digestmod=hashlib.sha1)
        for part in (nonce, localpart, password):
            mac.update(part.encode("utf-8"))
            mac.update(b"\x00")
        mac.update(b"admin" if admin else b"notadmin")
        body: dict[str, Any] = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
        }
        if displayname is not None:
            body["displayname"] = displayname
        result = self.client.post(path, body, token=None).expect(200, f"register {localpart}")
        return Account.from_response(result, localpart, password)

    def login(
        self,
        localpart: str,
        password: str = "pw",
        device_id: str | None = None,
        refresh_token: bool = False,
    ) -> Account:
        """``m.login.password`` login (a new device unless ``device_id`` names one)."""
        body: dict[str, Any] = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password,
        }
        if device_id is not None:
            body["device_id"] = device_id
        if refresh_token:
            body["refresh_token"] = True
        result = self.client.post("/_matrix/client/v3/login", body, token=None).expect(
            200, f"login {localpart}"
        )
        return Account.from_response(result, localpart, password)

    def guest_account(self) -> Account:
        result = self.client.post(
            "/_matrix/client/v3/register", {}, query={"kind": "guest"}, token=None
        ).expect(200, "guest registration")
        user_id: str = result["user_id"]
        return Account.from_response(result, user_id[1:].split(":", 1)[0], "")

    def admin_account(self) -> Account:
        """An admin account, registered on first use."""
        if self._admin is None:
            self._admin = self.register(self._new_localpart().replace("u", "admin", 1), admin=True)
        return self._admin

    @property
    def admin(self) -> Account:
        return self.admin_account()

    def login_as(self, user_id: str) -> str:
        """An access token for ``user_id`` (without a device) from the admin API."""
        result = self.client.post(
            f"/_synapse/admin/v1/users/{quote(user_id)}/login",
            {},
            token=self.admin_account().access_token,
        ).expect(200, f"admin login as {user_id}")
        token: str = result["access_token"]
        return token

    def user(self, account: Account, timeout: float = 60) -> MatrixUser:
        """A :class:`MatrixUser` for ``account`` on this server."""
        return MatrixUser(self.base_url, account, timeout=timeout)

    def new_user(
        self, localpart: str | None = None, password: str = "pw", **kwargs: Any
    ) -> MatrixUser:
        """Register and wrap in one step."""
        return self.user(self.register(localpart, password, **kwargs))

    # ------------------------------------------------------------------ extras

    def admin_request(self, method: str, path: str, **kwargs: Any) -> Response:
        """A request with the admin account's token."""
        return self.client.request(method, path, token=self.admin_account().access_token, **kwargs)

    def metrics(self) -> str:
        """The Prometheus text of ``/_synapse/metrics``."""
        resp = self.client.get("/_synapse/metrics", token=None)
        if resp.status != 200:
            raise AssertionError(f"metrics: HTTP {resp.status}: {resp.text(500)}")
        return resp.text()

    def wait_for_background_updates(self, timeout: float = 30) -> None:
        """Wait until Synapse reports no running background updates."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.admin_request("GET", "/_synapse/admin/v1/background_updates/status")
            if not status.expect(200, "background update status").get("current_updates"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"background updates still running: {status.text(500)}")
            time.sleep(0.1)
