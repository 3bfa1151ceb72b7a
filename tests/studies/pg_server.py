"""Throwaway servers on loopback for the several-machines tests and benchmark B8.

``postgres_cluster()``: a PostgreSQL cluster (``initdb`` + ``pg_ctl``) in a fresh temporary folder
on 127.0.0.1 and a free port, trust authentication for one superuser, gone when the block ends.
PostgreSQL refuses to run as root: as root, its programs run as the ``postgres`` user
(``runuser``), and the folder is that user's. ``mlflow_server()``: ``mlflow server`` on a
PostgreSQL backend with ``--artifacts-destination``, as the README's "Several machines" sets it up.

The binaries are PostgreSQL's own (``/usr/lib/postgresql/<version>/bin``, or ``$PG_BIN``); ``make
test`` installs them with apt-get where they are missing, so nothing here skips.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

SUPERUSER = "fer"


def pg_bin() -> Path:
    """The folder of ``initdb`` and ``pg_ctl``: ``$PG_BIN``, else the newest under /usr/lib/postgresql."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError("PostgreSQL's server programs (initdb, pg_ctl) are not installed: "
                       "`make test` installs them (apt-get install postgresql), or set PG_BIN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """A running throwaway cluster; ``url(db)`` is the SQLAlchemy URL of one of its databases."""

    folder: Path
    port: int
    as_user: list[str]  # the command prefix that runs PostgreSQL's programs (runuser as root)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, db: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{db}"

    def _ctl(self, *args: str) -> None:
        cmd = [*self.as_user, str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args]
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    def start(self) -> None:
        self._ctl("-l", str(self.folder / "server.log"), "-o",
                  f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off "
                  "-c max_connections=200", "start")

    def stop(self) -> None:
        """Fast shutdown: open sessions are ended, as a crash or a restart of the server would."""
        self._ctl("-m", "fast", "stop")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@contextlib.contextmanager
def postgres_cluster() -> Iterator[Cluster]:
    """A fresh cluster, started; stopped and deleted when the block ends."""
    folder = Path(tempfile.mkdtemp(prefix="fer-pg-"))  # under /tmp: reachable by the postgres user
    as_user = _as_postgres()
    if as_user:
        shutil.chown(folder, user="postgres", group="postgres")
    cluster = Cluster(folder, free_port(), as_user)
    try:
        subprocess.run([*as_user, str(pg_bin() / "initdb"), "-D", str(cluster.data), "-U", SUPERUSER,
                        "-A", "trust", "-E", "UTF8", "--no-sync"], check=True, capture_output=True, text=True)
        cluster.start()
        try:
            yield cluster
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                cluster.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class MlflowServer:
    """A running ``mlflow server``; ``restart`` starts it again on the same port."""

    backend: str
    artifacts: Path
    port: int
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend,
               "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1"]
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            time.sleep(0.3)
        raise RuntimeError(f"mlflow server did not answer in {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """Down at once, with every process of its session (the server's workers too). SIGKILL:
        its state is in the database, and a graceful stop waits seconds for idle clients."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@contextlib.contextmanager
def mlflow_server(backend: str, folder: Path) -> Iterator[MlflowServer]:
    """``mlflow server`` on ``backend`` (a database URL), artifacts under ``folder/artifacts``."""
    folder.mkdir(parents=True, exist_ok=True)
    server = MlflowServer(backend, folder / "artifacts", free_port(), folder / "mlflow-server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Gate:
    """A TCP relay on loopback in front of a server, that can be cut: while cut, connections are
    refused and open ones reset, as when the network or the server's machine is gone."""

    def __init__(self, upstream_port: int):
        self.upstream = upstream_port
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.open()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
