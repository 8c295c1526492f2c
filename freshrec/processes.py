"""Start, watch and stop freshrec's own long-running processes: the worker and the API.

Used by the CLI's ``demo``, the integration tests and the live benchmarks, so all run the
processes exactly as production does: the worker through ``python -m bytewax.run``, the API
under granian. :func:`running_pipeline` starts both against given settings,
:func:`embedded_pipeline` on a fresh embedded broker and Redis of their own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from freshrec.settings import Settings, settings_env
from freshrec.stack import embedded_stack, free_port

FLOW_TARGET = "dataflows.personalize:flow"
API_FACTORY = "serving.app:app_from_env"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def child_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a child process: ours, the settings, and the project on PYTHONPATH."""
    env = dict(os.environ)
    env.update(settings_env(settings))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


def worker_argv(
    *,
    workers_per_process: int = 1,
    recovery_dir: str | None = None,
    snapshot_s: int = 10,
    backup_s: int = 60,
    process_id: int | None = None,
    addresses: Sequence[str] = (),
) -> list[str]:
    """Command line of one dataflow process (``python -m bytewax.run``)."""
    argv = [sys.executable, "-m", "bytewax.run", FLOW_TARGET, "-w", str(workers_per_process)]
    if recovery_dir:
        argv += ["-r", recovery_dir, "-s", str(snapshot_s), "-b", str(backup_s)]
    if process_id is not None and addresses:
        argv += ["-i", str(process_id), "-a", ";".join(addresses)]
    return argv


def init_recovery(recovery_dir: str, partitions: int) -> bool:
    """Create Bytewax recovery partitions in an empty/missing directory; True if it did.

    An existing store is left alone: resuming from it is the point.
    """
    path = Path(recovery_dir)
    if path.exists() and any(path.iterdir()):
        return False
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "bytewax.recovery", str(path), str(partitions)], check=True
    )
    return True


def api_argv() -> list[str]:
    """Command line of the API under the production server."""
    return [sys.executable, "-m", "freshrec.cli", "serve"]


def spawn(
    argv: list[str], settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a child in its own session (so stopping it stops its children too)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    return subprocess.Popen(
        argv,
        env=child_env(settings, extra_env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=PROJECT_ROOT,
    )


def stop(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGINT the child's process group (bytewax and granian stop cleanly on it), then kill."""
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's whole process group at once (crash drills)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait(5.0)


def wait_http(
    url: str, timeout_s: float = 30.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until ``url`` answers 200; fail early if ``process`` died."""
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s: {last_error}")


@dataclass(frozen=True)
class RunningPipeline:
    """A worker and (unless started without) an API, running against ``settings``."""

    settings: Settings
    api_url: str


@contextlib.contextmanager
def running_pipeline(
    settings: Settings, log_dir: Path, *, api: bool = True
) -> Iterator[RunningPipeline]:
    """Start the worker (and the API) as real processes; stop them afterwards.

    They run against ``settings``' broker and Redis, the API on a free port (waited for until
    /health answers); logs go to ``log_dir``.
    """
    port = free_port()
    settings = msgspec.structs.replace(settings, api_port=port)
    started = []
    try:
        worker = spawn(worker_argv(), settings, log_dir / "worker.log")
        started.append(worker)
        url = f"http://127.0.0.1:{port}"
        if api:
            server = spawn(api_argv(), settings, log_dir / "api.log")
            started.append(server)
            wait_http(url + "/health", 30.0, server)
        yield RunningPipeline(settings, url)
    finally:
        for proc in reversed(started):
            stop(proc)


@contextlib.contextmanager
def embedded_pipeline(
    run_dir: Path, *, api: bool = True, **overrides: Any
) -> Iterator[RunningPipeline]:
    """A fresh embedded broker and Redis in ``run_dir``, the worker (and the API) on them.

    What a live benchmark runs against. ``overrides``: settings of the run (the environment's
    ``FRESHREC_*`` are not read, so a run is reproducible).
    """
    with (
        embedded_stack(run_dir, **overrides) as settings,
        running_pipeline(settings, run_dir, api=api) as pipeline,
    ):
        yield pipeline
