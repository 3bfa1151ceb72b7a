"""A stand-in of the Hugging Face hub on 127.0.0.1, and a fetch run against it in a subprocess.

The stand-in answers the one endpoint huggingface_hub's file downloads use,
``HEAD|GET {endpoint}/{org}/{name}/resolve/{revision}/{file}``, as the hub does: ``X-Repo-Commit``,
an ``ETag`` that is the git blob sha1 of a small file, and for an LFS file (``*.safetensors``,
``*.nemo``) ``X-Linked-Etag`` = its sha256 and ``X-Linked-Size``; ``Range: bytes=N-`` answered
206; a missing repo or file a 404 with the hub's ``X-Error-Code``. It logs every request, and can
cut a download after N bytes (then answer 503 until ``up()``) or serve wrong bytes of the right length.

huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE once, at import, and the test
session sets HF_HUB_OFFLINE (tests/conftest.py): each fetch runs in a fresh interpreter with them set
(``run_fetch``). The ``hub`` fixture (conftest.py) serves one stand-in per test.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LFS_PATTERNS = ("*.safetensors", "*.nemo")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def safetensors_bytes(values: int, *, fill: int = 1) -> bytes:
    """A valid safetensors file holding one float32 tensor of ``values`` elements."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [values], "data_offsets": [0, 4 * values]}}).encode()
    header += b" " * (-len(header) % 8)
    body = (bytes(range(fill % 251, 251)) + bytes(range(fill % 251))) * (4 * values // 251 + 1)
    return len(header).to_bytes(8, "little") + header + body[:4 * values]


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str

    def etag(self, name: str) -> str:
        data = self.files[name]
        return hashlib.sha256(data).hexdigest() if self.is_lfs(name) else git_blob_sha1(data)

    @staticmethod
    def is_lfs(name: str) -> bool:
        return any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS)


@dataclass
class FakeHub:
    url: str = ""
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)
    cuts: dict[tuple[str, str], tuple[int, bool]] = field(default_factory=dict)
    corrupt: set[tuple[str, str]] = field(default_factory=set)
    down: bool = False

    def add(self, repo_id: str, files: dict[str, bytes]) -> Repo:
        commit = hashlib.sha1((repo_id + "".join(sorted(files))).encode()).hexdigest()
        self.repos[repo_id] = Repo(dict(files), commit)
        return self.repos[repo_id]

    def cut_after(self, repo_id: str, name: str, nbytes: int, *, then_down: bool = True) -> None:
        """The next GET of this file sends ``nbytes`` and drops the connection; then the hub
        answers 503 until ``up()`` (``then_down``), or goes on serving."""
        self.cuts[(repo_id, name)] = (nbytes, then_down)

    def up(self) -> None:
        self.down = False

    def gets(self, name: str) -> list[str | None]:
        """The Range header of every GET of a file called ``name``."""
        return [rng for method, path, rng in self.requests if method == "GET" and path.endswith("/" + name)]


def serve(state: FakeHub) -> ThreadingHTTPServer:
    """Start serving ``state`` on a free port of 127.0.0.1 (``state.url``); ``shutdown()`` stops it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def do_HEAD(self):
            self._answer(body=False)

        def do_GET(self):
            self._answer(body=True)

        def _error(self, status: int, code: str, commit: str | None = None):
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _answer(self, *, body: bool):
            hub.requests.append((self.command, self.path, self.headers.get("Range")))
            if hub.down:
                return self._error(503, "ServiceUnavailable")
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return self._error(404, "RepoNotFound")
            repo_id, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            repo = hub.repos.get(repo_id)
            if repo is None:
                return self._error(404, "RepoNotFound")
            if revision not in ("main", repo.commit):
                return self._error(404, "RevisionNotFound")
            if name not in repo.files:
                return self._error(404, "EntryNotFound", repo.commit)
            data = repo.files[name]
            if body and (repo_id, name) in hub.corrupt:
                data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]  # same length, other bytes
            start = 0
            rng = self.headers.get("Range")
            if body and rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[len("bytes="):-1])
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("ETag", f'"{repo.etag(name)}"')
            if repo.is_lfs(name):
                self.send_header("X-Linked-Etag", f'"{repo.etag(name)}"')
                self.send_header("X-Linked-Size", str(len(data)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if not body:
                return
            cut = hub.cuts.pop((repo_id, name), None)
            if cut is None:
                self.wfile.write(data[start:])
                return
            nbytes, then_down = cut
            self.wfile.write(data[start:start + nbytes])
            self.wfile.flush()
            hub.down = then_down
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


_FETCH = """
import json, sys
from fer.weights import checkpoint, fetch
args = json.loads(sys.argv[1])
results = fetch([checkpoint(i) for i in args["ids"]], args["cache"], progress=False)
print(json.dumps([{"id": r.checkpoint.id, "status": r.status, "detail": r.detail} for r in results]))
"""


def hub_env(hub: FakeHub, hf_home: Path, *, offline: bool = False) -> dict[str, str]:
    """The environment of a process that talks to ``hub`` with its Hugging Face cache in ``hf_home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    flag = "1" if offline else "0"
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(hf_home), HF_HUB_OFFLINE=flag, TRANSFORMERS_OFFLINE=flag,
               HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    return env


def run_fetch(hub: FakeHub, hf_home: Path, cache_dir: Path, ids: list[str], *,
              offline: bool = False) -> dict[str, dict]:
    """``fer.weights.fetch`` of ``ids`` in a fresh interpreter; its results by id."""
    args = json.dumps({"ids": ids, "cache": str(cache_dir)})
    proc = subprocess.run([sys.executable, "-c", _FETCH, args], env=hub_env(hub, hf_home, offline=offline),
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return {r["id"]: r for r in json.loads(proc.stdout.strip().splitlines()[-1])}
