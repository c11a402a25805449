"""The embedded PostgreSQL server that lives in AGENTPLANE_HOME.

It uses the binaries shipped in the `pgserver` wheel (PostgreSQL 16 with
pgvector). One server serves every agentplane process using the same home:
processes register their pid in a handles file under a file lock, and the last
one to leave stops the server. A handle left by a killed process is pruned.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agentplane.errors import ConfigError, DatabaseUnavailable

POSTGRES_SYSTEM_USER = "pgserver"  # postgres refuses to run as root
SUPERUSER = "postgres"
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux


def _bin_dir() -> Path:
    # Located without importing pgserver, whose import has side effects (warnings).
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the pgserver package is not installed; run: pip install pgserver")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def pg_binary(name: str) -> str:
    return str(_bin_dir() / name)


@dataclass
class EmbeddedServer:
    home: Path
    listen: str = ""
    port: int = 5432
    settings: dict[str, str] | None = None

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def socket_dir(self) -> Path:
        if len(str(self.run_dir)) + len("/.s.PGSQL.65535") <= MAX_SOCKET_PATH:
            return self.run_dir
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"agentplane-{digest}"

    def conninfo(self, user: str = SUPERUSER, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} port={self.port} user={user} dbname={dbname}"

    # -- lifecycle -----------------------------------------------------------

    def acquire(self) -> None:
        """Start the server if needed and register this process as a user of it."""
        self._prepare_home()
        with self._locked():
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            if not self.is_running():
                self._start()
            handles = self._live_handles()
            handles.add(os.getpid())
            self._write_handles(handles)

    def release(self) -> bool:
        """Unregister this process; stop the server if no live process uses it.

        Returns whether the server was stopped.
        """
        with self._locked():
            handles = self._live_handles()
            handles.discard(os.getpid())
            self._write_handles(handles)
            if handles or not self.is_running():
                return False
            self._pg_ctl("stop", "-m", "fast", "-w")
            return True

    def stop(self) -> None:
        """Stop the server whoever uses it (tests and `agentplane db stop`)."""
        with self._locked():
            if self.is_running():
                self._pg_ctl("stop", "-m", "fast", "-w")
            self._write_handles(set())

    def start(self) -> None:
        with self._locked():
            if not self.is_running():
                self._start()

    def is_running(self) -> bool:
        pid = self.postmaster_pid()
        return pid is not None and _alive(pid)

    def postmaster_pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            first = pidfile.read_text().splitlines()[0]
            return int(first)
        except (FileNotFoundError, IndexError, ValueError):
            return None

    # -- internals -----------------------------------------------------------

    def _prepare_home(self) -> None:
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            self.run_dir.mkdir(exist_ok=True)
            probe = self.run_dir / f".write-probe-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"AGENTPLANE_HOME {self.home} is not writable ({exc.strerror or exc}); "
                "point AGENTPLANE_HOME at a directory you can write to"
            ) from None
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if _as_root():
            self._grant_postgres_user()

    def _grant_postgres_user(self) -> None:
        entry = _ensure_system_user(POSTGRES_SYSTEM_USER)
        install = _bin_dir().parent
        for path in (self.run_dir, install):
            _open_parents(path)
        if not (install / "bin" / "postgres").stat().st_mode & 0o001:
            _open_tree(install)
        for path in (self.run_dir, self.socket_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        if self.pgdata.exists():
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if _as_root():
            self._grant_postgres_user()
        self._run(
            pg_binary("initdb"),
            "-D",
            str(self.pgdata),
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
        )
        conf = {
            "listen_addresses": f"'{self.listen}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "unix_socket_permissions": "0700",
            "max_connections": "300",
            "shared_buffers": "256MB",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        conf.update(self.settings or {})
        lines = [f"{key} = {value}" for key, value in conf.items()]
        with (self.pgdata / "postgresql.conf").open("a") as fh:
            fh.write("\n# agentplane\n" + "\n".join(lines) + "\n")

    def _start(self) -> None:
        log = self.pgdata / "server.log"
        try:
            self._pg_ctl("start", "-w", "-t", "60", "-l", str(log))
        except DatabaseUnavailable as exc:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise DatabaseUnavailable(f"{exc.detail}\n{tail}") from None

    def _pg_ctl(self, *args: str) -> None:
        self._run(pg_binary("pg_ctl"), "-D", str(self.pgdata), *args)

    def _run(self, *cmd: str) -> None:
        user = POSTGRES_SYSTEM_USER if _as_root() else None
        with tempfile.TemporaryFile("w+") as out:
            # Output goes to a file: pg_ctl's children keep pipes open and hang readers.
            result = subprocess.run(cmd, stdout=out, stderr=out, user=user, check=False)
            if result.returncode != 0:
                out.seek(0)
                name = Path(cmd[0]).name
                raise DatabaseUnavailable(
                    f"embedded PostgreSQL: {name} failed: {out.read().strip()[-1500:]}"
                )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.run_dir / "server.lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @property
    def _handles_path(self) -> Path:
        return self.run_dir / "handles.json"

    def _live_handles(self) -> set[int]:
        try:
            pids = set(json.loads(self._handles_path.read_text()))
        except (FileNotFoundError, ValueError):
            pids = set()
        return {pid for pid in pids if _alive(pid)}

    def _write_handles(self, pids: set[int]) -> None:
        tmp = self._handles_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(pids)))
        tmp.replace(self._handles_path)


def _as_root() -> bool:
    return os.geteuid() == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ensure_system_user(name: str):  # -> pwd.struct_passwd
    import pwd

    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", name], check=True, capture_output=True
        )
        return pwd.getpwnam(name)


def _open_parents(path: Path) -> None:
    """Let the postgres system user traverse every parent of path."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & 0o055 != 0o055:
            parent.chmod(mode | 0o055)


def _open_tree(root: Path) -> None:
    """Let the postgres system user read (and run) the installed binaries."""
    for dirpath, _dirs, files in os.walk(root):
        Path(dirpath).chmod(Path(dirpath).stat().st_mode | 0o055)
        for name in files:
            f = Path(dirpath) / name
            mode = f.stat().st_mode
            f.chmod(mode | 0o044 | (0o011 if mode & 0o100 else 0))
