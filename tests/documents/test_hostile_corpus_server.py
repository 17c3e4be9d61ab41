"""The whole hostile corpus, uploaded at once to a real server (`quarry serve` under uvicorn,
in its own process): /health/ready answers 200 within 2 s every ~100 ms throughout, and every
file ends as it should. Oversized uploads over real sockets are refused without being read."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.documents.hostile_corpus import CORPUS, CORPUS_LIMITS, PASSWD_LINE, mismatches
from tests.support.processes import ManagedProcess, ProcessGroup

REPO = Path(__file__).resolve().parents[2]
ADMIN_EMAIL = "corpus@example.org"
ADMIN_PASSWORD = "a long and unguessable password"
MAX_UPLOAD_MB = 4
HEALTH_INTERVAL = 0.1
HEALTH_TIMEOUT = 2.0


@dataclass
class Server:
    url: str
    process: ManagedProcess
    storage: Path
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("corpus-server")
    port = free_port()
    env = {
        "PYTHONPATH": f"{REPO / 'backend'}:{REPO}",
        "QUARRY_ENV": "test",
        "QUARRY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/quarry.db",
        "QUARRY_STORAGE_DIR": str(tmp / "storage"),
        "QUARRY_SECRET_KEY": "corpus-test-secret-key-long-enough-for-hs256",
        "QUARRY_ADMIN_EMAIL": ADMIN_EMAIL,
        "QUARRY_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "QUARRY_PASSWORD_HASH_PROFILE": "test",
        "QUARRY_LOG_LEVEL": "WARNING",
        "QUARRY_LOG_JSON": "false",
        "QUARRY_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
        # This test is about parsing, not about the per-user request limits.
        "QUARRY_API_REQUESTS_PER_MINUTE": "0",
        **{f"QUARRY_{name.upper()}": str(value) for name, value in CORPUS_LIMITS.items()},
    }
    argv = [sys.executable, "-m", "tests.documents.serve_with_fault_child"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    with ProcessGroup(tmp / "logs") as group:
        process = group.start("quarry-serve", argv, env=env, cwd=REPO)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            assert process.alive, f"the server exited:\n{group.report()}"
            assert time.monotonic() < deadline, f"the server did not start:\n{group.report()}"
            time.sleep(0.2)
        served = Server(url, process, tmp / "storage")
        token = httpx.post(
            f"{url}/api/v1/auth/token",
            data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
            timeout=30,
        )
        assert token.status_code == 200, token.text
        served.headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        yield served
        assert process.alive, f"the server died:\n{group.report()}"


def create_project(server: Server, name: str) -> str:
    response = httpx.post(
        f"{server.url}/api/v1/projects", json={"name": name}, headers=server.headers, timeout=30
    )
    assert response.status_code == 201, response.text
    project_id: str = response.json()["id"]
    return project_id


class HealthPoller(threading.Thread):
    """Asks /health/ready every ~100 ms from its own thread, so that what it measures is the
    server's responsiveness, not this test's event loop."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.answers: list[tuple[float, int | str, float]] = []  # (at, status or error, s)
        self._done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=HEALTH_TIMEOUT) as client:
            while not self._done.is_set():
                started = time.monotonic()
                try:
                    outcome: int | str = client.get(f"{self.url}/health/ready").status_code
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                self.answers.append((started, outcome, time.monotonic() - started))
                self._done.wait(max(0.0, HEALTH_INTERVAL - (time.monotonic() - started)))

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)


def peak_memory_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_the_whole_corpus_at_once_leaves_the_server_ready_throughout(
    server: Server,
) -> None:
    pid = create_project(server, "Hostile corpus")
    corpus = list(CORPUS)
    payloads = [hostile.data for hostile in corpus]  # built before the clock starts
    peak_before = peak_memory_mb(server.process.pid)
    poller = HealthPoller(server.url)
    poller.start()
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(
            base_url=server.url, headers=server.headers, timeout=60
        ) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"/api/v1/projects/{pid}/documents",
                        files=[("files", (hostile.filename, data, "application/octet-stream"))],
                    )
                    for hostile, data in zip(corpus, payloads, strict=True)
                )
            )
            uploaded = time.monotonic() - started
            documents = await settled_documents(client, pid, timeout=120)
            settled = time.monotonic() - started
            texts = {
                d["filename"]: await text_of(client, pid, d["id"])
                for d in documents
                if d["status"] == "ready"
            }
    finally:
        poller.stop()

    # The server answered readiness, quickly, the whole time.
    statuses = [outcome for _, outcome, _ in poller.answers]
    slowest = max(seconds for _, _, seconds in poller.answers)
    assert all(outcome == 200 for outcome in statuses), statuses
    assert slowest < HEALTH_TIMEOUT
    assert len(poller.answers) >= settled / (HEALTH_INTERVAL + HEALTH_TIMEOUT)
    print(
        f"\ncorpus of {len(corpus)} files: uploaded in {uploaded:.1f} s, settled in "
        f"{settled:.1f} s; {len(statuses)} readiness checks, all 200, slowest "
        f"{slowest * 1000:.0f} ms; server peak RSS {peak_before:.0f} MB before, "
        f"{peak_memory_mb(server.process.pid):.0f} MB after"
    )

    # Every file ended as it should: a clear 4xx or a document ready or failed with a reason.
    assert not [r.status_code for r in responses if r.status_code >= 500]
    by_name = {d["filename"]: d for d in documents}
    problems: list[str] = []
    for hostile, response in zip(corpus, responses, strict=True):
        text = texts.get(hostile.filename, "")
        problems += mismatches(hostile, response, by_name.get(hostile.filename), text)
    assert not problems, "\n".join(problems)
    assert PASSWD_LINE not in str(documents) + "".join(texts.values())


async def settled_documents(
    client: httpx.AsyncClient, pid: str, timeout: float
) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/api/v1/projects/{pid}/documents?limit=100")
        assert response.status_code == 200, response.text
        items: list[dict[str, object]] = response.json()["items"]
        if all(d["status"] in ("ready", "failed") for d in items):
            return items
        assert time.monotonic() < deadline, [(d["filename"], d["status"]) for d in items]
        await asyncio.sleep(0.2)


async def text_of(client: httpx.AsyncClient, pid: str, document_id: object) -> str:
    response = await client.get(f"/api/v1/projects/{pid}/documents/{document_id}/text")
    return "\n\n".join(page["text"] for page in response.json()["pages"])


def raw_upload_head(server: Server, pid: str, length_header: str) -> bytes:
    token = server.headers["Authorization"]
    return (
        f"POST /api/v1/projects/{pid}/documents HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\nAuthorization: {token}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"{length_header}\r\n\r\n"
    ).encode()


class ResponseReader(threading.Thread):
    """Reads what the server answers while the test is still sending: a server that refuses
    an upload early answers, then closes a connection with unread data, which resets it and
    could discard an answer read only afterwards."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.received = b""

    def run(self) -> None:
        with contextlib.suppress(OSError):
            while chunk := self.sock.recv(4096):
                self.received += chunk

    def status(self, timeout: float) -> int:
        self.join(timeout)
        assert self.received.startswith(b"HTTP/1.1 "), self.received[:200]
        return int(self.received.split(b" ", 2)[1])


def test_a_declared_2_gb_upload_is_refused_before_it_is_sent(server: Server) -> None:
    pid = create_project(server, "Declared 2 GB")
    before = peak_memory_mb(server.process.pid)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        reader = ResponseReader(sock)
        reader.start()
        sock.sendall(raw_upload_head(server, pid, f"Content-Length: {2 * 1024**3}"))
        with contextlib.suppress(OSError):
            sock.sendall(b'--b\r\nContent-Disposition: form-data; name="files"; filename="a"\r\n')
        # Answered with only the head sent: the 2 GB never go (the timeout is a hang guard).
        assert reader.status(timeout=60) == 413
    assert peak_memory_mb(server.process.pid) - before < 50


def test_an_endless_chunked_upload_is_cut_off_at_the_limit(server: Server) -> None:
    pid = create_project(server, "Endless")
    chunk = b"x" * (256 * 1024)
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    first = b'--b\r\nContent-Disposition: form-data; name="files"; filename="endless.txt"\r\n\r\n'
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        reader = ResponseReader(sock)
        reader.start()
        sock.sendall(raw_upload_head(server, pid, "Transfer-Encoding: chunked"))
        sock.sendall(b"%x\r\n%s\r\n" % (len(first), first))
        # Send until the server stops reading: it answers 413 and closes the connection.
        with contextlib.suppress(OSError):
            while sent < 512 * 1024 * 1024 and reader.is_alive():
                sock.sendall(framed)
                sent += len(chunk)
        assert reader.status(timeout=10) == 413
    # The limit is 4 MB; whatever more was sent sat in the two sockets' buffers.
    assert sent < 64 * 1024 * 1024, f"the server kept reading: {sent / 2**20:.0f} MB sent"
    assert not list((server.storage / "tmp").iterdir())
