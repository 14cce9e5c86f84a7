"""The HTTP limits of ``learnloss serve`` (``learnloss.serve.limits``), each against the attack it closes: through a
real ``learnloss serve`` process on a free port (raw sockets for what a client library would not send: a declared
200 MB body, a chunked body that never ends, requests held open) and FastAPI's test client over the real
application for the rest, on a real project store."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "labelstudio"))

from lsclient import free_port, stop_process  # noqa: E402
from tests_support import store_snapshot  # noqa: E402

from learnloss.cli.main import main  # noqa: E402
from learnloss.errors import UsageError  # noqa: E402
from learnloss.labeling.backend import LabelStudioBackend, ServeConfig  # noqa: E402
from learnloss.labeling.workflow import project_dataset, project_spec, query_project  # noqa: E402
from learnloss.project.store import ProjectStore  # noqa: E402
from learnloss.runs.evaluate import ProjectReader  # noqa: E402
from learnloss.serve.app import create_app  # noqa: E402
from learnloss.serve.limits import ServeLimits, host_name  # noqa: E402

fastapi_testclient = pytest.importorskip("fastapi.testclient")

#: The annotation event of the probe (M1): item 4 labeled "a".
EVENT = {"action": "ANNOTATION_CREATED", "task": {"data": {"learnloss_id": 4}},
         "annotation": {"id": 1, "result": [{"value": {"choices": ["a"]}}]}}
#: The limits of the served process: small, so that the tests send little.
BODY_MB, MAX_REQUESTS = 1, 2


def _make_images(folder: Path) -> dict[str, str]:
    """16 small noise images of two classes, a00.png … b07.png: file name -> class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    truth = {}
    for c, name in enumerate(("a", "b")):
        for i in range(8):
            pixels = rng.integers(0, 90, size=(16, 16, 3), dtype=np.uint8)
            pixels[..., c] += 160
            Image.fromarray(pixels).save(folder / f"{name}{i:02d}.png")
            truth[f"{name}{i:02d}.png"] = name
    return truth


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project of classes a and b after one query; item 4 (a03.png) unlabeled."""
    base = tmp_path_factory.mktemp("limits")
    truth = _make_images(base / "photos")
    labels = base / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{n},{c}\n" for n, c in truth.items() if int(n[1:3]) >= 5))
    project = base / "project"
    assert main(["init", str(project), "--images", str(base / "photos"), "--classes", "a,b", "--labels", str(labels),
                 "--epochs", "1", "--image-size", "16", "--seed", "0"]) == 0
    assert main(["query", str(project), "--k", "2", "--quiet"]) == 0
    return project


def _copy(trained: Path, folder: Path) -> Path:
    copy = folder / "project"
    shutil.copytree(trained, copy)
    return copy


@pytest.fixture
def project(trained: Path, tmp_path: Path) -> Path:
    return _copy(trained, tmp_path)


def _backend(project: Path) -> LabelStudioBackend:
    return LabelStudioBackend(project, ServeConfig(retrain_every=0), ProjectReader(project_spec, project_dataset),
                              query_project)


def _client(project: Path, token: str | None = None, **limits) -> tuple[LabelStudioBackend, object]:
    backend = _backend(project)
    app = create_app(backend, token, ServeLimits(**limits))
    return backend, fastapi_testclient.TestClient(app, base_url="http://127.0.0.1:9090")


def _labels(project: Path) -> dict:
    with ProjectStore(project) as store:
        return store.current_labels()


# ---------------------------------------------------------------------------------- a real learnloss serve process

@pytest.fixture(scope="module")
def served(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, subprocess.Popen]]:
    """``learnloss serve`` on a copy of the project, on a free port of 127.0.0.1, with a body limit of 1 MiB and two
    requests at a time; (project, port, process)."""
    base = tmp_path_factory.mktemp("served")
    project = _copy(trained, base)
    port = free_port()
    log = base / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("LEARNLOSS_SERVE_TOKEN", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "learnloss", "serve", str(project), "--port", str(port), "--retrain-every", "0",
             "--device", "cpu", "--max-body-mb", str(BODY_MB), "--max-requests", str(MAX_REQUESTS)],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise AssertionError(f"learnloss serve exited with {process.returncode}: {log.read_text()[-3000:]}")
            try:
                if _exchange(port, _head("GET", "/health", port))[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"learnloss serve did not answer: {log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield project, port, process
    finally:
        stop_process(process)


def _head(method: str, path: str, port: int, headers: dict[str, str] | None = None) -> bytes:
    """The request line and headers of an HTTP/1.1 request (Host 127.0.0.1:port unless ``headers`` names one)."""
    fields = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    return (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n").encode()


def _read_response(sock: socket.socket, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of the response on ``sock``."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError(f"the connection closed before a response; got {data[:200]!r}")
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return status, headers, body[:length]


def _exchange(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body)
        return _read_response(sock)


def _post_json(port: int, path: str, payload: object, headers: dict[str, str] | None = None
               ) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    return _exchange(port, _head("POST", path, port, {"Content-Type": "application/json",
                                                       "Content-Length": str(len(body)), **(headers or {})}), body)


def _one_line_error(body: bytes) -> str:
    answer = json.loads(body)
    assert set(answer) == {"error"} and "\n" not in answer["error"] and answer["error"]
    return answer["error"]


def test_a_web_page_of_another_host_cannot_write_labels_by_dns_rebinding(served):
    """M1: the probe's request (Host and Origin of attacker.example) is refused and stores nothing; Label Studio's own
    calls (Host 127.0.0.1 or localhost, no Origin) still store."""
    project, port, _ = served
    with ProjectStore(project) as store:
        assert 4 in dict(store.items()) and 4 not in store.current_labels()
        before = store_snapshot(store)
    status, _, body = _post_json(port, "/webhook", EVENT, {"Host": f"attacker.example:{port}",
                                                           "Origin": f"http://attacker.example:{port}"})
    assert status == 403 and "attacker.example" in _one_line_error(body) and "--allowed-host" in _one_line_error(body)
    # an allowed Host with a foreign browser Origin is a page of another site: refused too
    status, _, body = _post_json(port, "/webhook", EVENT, {"Origin": f"http://attacker.example:{port}"})
    assert status == 403 and "web page" in _one_line_error(body)
    assert _post_json(port, "/webhook", EVENT, {"Origin": "null"})[0] == 403
    with ProjectStore(project) as store:
        assert store_snapshot(store) == before
    # this machine's loopback names, with or without the port: answered
    for host in ("localhost", f"localhost:{port}", "127.0.0.1", f"[::1]:{port}", "LOCALHOST"):
        assert _exchange(port, _head("GET", "/health", port, {"Host": host}))[0] == 200, host
    assert _exchange(port, _head("GET", "/health", port, {"Origin": f"http://localhost:{port}"}))[0] == 200
    # Label Studio's server-to-server call: Host 127.0.0.1:PORT, no Origin
    status, _, body = _post_json(port, "/webhook", EVENT)
    assert status == 200 and json.loads(body)["added"] == 1
    assert _labels(project)[4] == "a"


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(served):
    """M2: a Content-Length of 200 MB is answered 413 before a byte of the body is sent."""
    project, port, _ = served
    before = _labels(project)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(_head("POST", "/webhook", port, {"Content-Type": "application/json",
                                                      "Content-Length": str(200_000_000)}))
        status, headers, body = _read_response(sock)
    assert status == 413 and f"{BODY_MB} MiB" in _one_line_error(body) and "--max-body-mb" in _one_line_error(body)
    assert headers["connection"] == "close"
    assert _labels(project) == before


def _stream_chunked(port: int, total: int, result: dict) -> None:
    """POST a chunked JSON body of ``total`` bytes to /webhook; the response (or the error) into ``result``."""
    piece = b"x" * 65536
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sent = 0

    def pump() -> None:
        nonlocal sent
        try:
            sock.sendall(_head("POST", "/webhook", port, {"Content-Type": "application/json",
                                                          "Transfer-Encoding": "chunked"}))
            sock.sendall(b'8\r\n{"pad":"\r\n')
            while sent < total:
                sock.sendall(chunk)
                sent += len(piece)
            sock.sendall(b'2\r\n"}\r\n0\r\n\r\n')
        except OSError:  # the server answered and closed: what a limit does
            pass

    sender = threading.Thread(target=pump, daemon=True)
    sender.start()
    try:
        result["response"] = _read_response(sock, timeout=120)
    except OSError as error:
        result["response"] = error
    sender.join(120)
    result["sent"] = sent
    sock.close()


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's peak memory from /proc")
def test_three_chunked_bodies_over_the_limit_at_once_are_cut_off_and_memory_stays_flat(served):
    """M2/M3: three chunked bodies of 64 MiB at once (no Content-Length to refuse up front) are each answered 413 once
    they pass the limit; the server reads little of them and its peak memory barely moves (the probe saw 356 →
    943 MB for one 200 MB body, 2.1 GB for three)."""
    project, port, process = served
    before = _labels(project)
    try:
        Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # reset the peak (Linux 4.0+)
    except OSError:
        pass
    peak = _peak_rss(process.pid)
    total = 64 << 20
    results: list[dict] = [{} for _ in range(3)]
    threads = [threading.Thread(target=_stream_chunked, args=(port, total, result)) for result in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    for result in results:
        response = result["response"]
        assert not isinstance(response, BaseException), response
        status, _, body = response
        # 503 when all three arrived while two were in flight: refused before its body is read, as it should be
        assert status in (413, 503), (status, body)
        assert f"{BODY_MB} MiB" in _one_line_error(body) or "retry" in _one_line_error(body)
        assert result["sent"] < total // 2  # the server stopped reading: the rest was never accepted
    assert sum(r["response"][0] == 413 for r in results) >= 1
    assert _peak_rss(process.pid) - peak < 48 << 20
    assert _labels(project) == before
    assert _exchange(port, _head("GET", "/health", port))[0] == 200  # and it serves on


def test_requests_beyond_the_limit_at_once_get_503_with_retry_after(served):
    """M3: with two requests held open mid-body (the limit), a third is refused at once with 503 and Retry-After;
    the held ones complete, and then requests are answered again."""
    _, port, _ = served
    body = json.dumps({"action": "PROJECT_UPDATED", "pad": "x" * 200}).encode()
    held = []
    for _ in range(MAX_REQUESTS):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(_head("POST", "/webhook", port, {"Content-Type": "application/json",
                                                      "Content-Length": str(len(body))}) + body[:10])
        held.append(sock)
    try:
        deadline = time.monotonic() + 20
        while True:  # until the server has taken both held requests in
            status, headers, answer = _exchange(port, _head("GET", "/health", port))
            if status == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 503 and int(headers["retry-after"]) >= 1
        assert "--max-requests" in _one_line_error(answer)
        for sock in held:
            sock.sendall(body[10:])
            status, _, answer = _read_response(sock)
            assert status == 200 and json.loads(answer)["status"] == "ignored"
    finally:
        for sock in held:
            sock.close()
    assert _exchange(port, _head("GET", "/health", port))[0] == 200


# ------------------------------------------------------------------------------------------- the test client

def test_with_a_token_any_host_is_accepted_unless_allowed_hosts_are_named(project):
    token = "a-token-of-enough-length-42"
    auth = {"Authorization": f"Bearer {token}"}
    foreign = {"Host": "labels.example.org:9090", "Origin": "http://labels.example.org:9090"}
    _, client = _client(project, token)
    assert client.get("/health", headers=foreign).status_code == 401  # the token is what guards it
    assert client.get("/health", headers={**foreign, **auth}).status_code == 200
    _, client = _client(project, token, allowed_hosts=("Labels.Example.org",))
    assert client.get("/health", headers={**foreign, **auth}).status_code == 200
    refused = client.get("/health", headers={"Host": "attacker.example", **auth})
    assert refused.status_code == 403 and "labels.example.org" in _one_line_error(refused.content)
    _, client = _client(project, None, allowed_hosts=("labels.example.org",))
    assert client.get("/health", headers=foreign).status_code == 200
    assert client.get("/health", headers={"Host": "attacker.example"}).status_code == 403


def test_host_names_are_parsed_as_rfc_9110_says():
    assert [host_name(v) for v in ("127.0.0.1:9090", "[::1]:80", "::1", "LocalHost", "a.example:1")] == [
        "127.0.0.1", "::1", "::1", "localhost", "a.example"]
    for bad in ("a.example:port", "[::1", "[::1]x", "a b", "", "exa\u00e9mple", "[evil.example]:80"):
        assert host_name(bad) is None, bad
    limits = ServeLimits()
    assert limits.allows_host("127.0.0.2") and limits.allows_host("localhost") and not limits.allows_host("10.0.0.1")
    assert not limits.allows_host(None)


@contextlib.contextmanager
def _uvicorn(app: object) -> Iterator[int]:
    """``app`` served by uvicorn in a thread on a free port of 127.0.0.1; the port."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def test_a_token_with_non_ascii_characters_sent_as_utf8_is_accepted(project):
    """m2: the header's bytes, as a client sends them (curl: the token's UTF-8 bytes), are compared with the token's
    UTF-8 bytes; the same characters in another encoding, or another token, are refused."""
    token = "contraseña-ñandú-çedilla-ß"
    with _uvicorn(create_app(_backend(project), token)) as port:
        def health(authorization: bytes) -> int:
            head = _head("GET", "/health", port).replace(b"\r\n\r\n", b"\r\nAuthorization: " + authorization
                                                         + b"\r\n\r\n")
            return _exchange(port, head)[0]

        assert health(b"Bearer " + token.encode()) == 200
        assert health(b"Basic " + base64.b64encode(f"label-studio:{token}".encode())) == 200
        assert health(b"Bearer " + "contraseña-ñandú-çedilla-x".encode()) == 401
        assert health(b"Bearer " + token.encode("latin-1")) == 401
        assert health(b"Bearer " + token.encode()[:-1]) == 401


def test_a_predict_of_more_tasks_than_the_limit_is_refused_in_one_line(project):
    """m3: 20,000 tasks in one /predict (the limit: 1,000 by default) → 413, one line, nothing scored."""
    backend, client = _client(project)
    assert backend.load()
    task = {"id": 1, "data": {"learnloss_id": 4}}
    response = client.post("/predict", json={"tasks": [task] * 20_000})
    assert response.status_code == 413
    error = _one_line_error(response.content)
    assert "20,000 tasks" in error and "1,000" in error and "--max-tasks" in error


def test_tasks_naming_the_same_item_are_scored_once(project, monkeypatch):
    """m3: 2,000 copies of one task and 3 of another → two items decoded and scored, every copy the same answer."""
    backend, client = _client(project, max_tasks=5_000)
    assert backend.load()
    scored: list[list[str]] = []
    real = backend._score

    def counting(model, paths):  # the real scoring, counted
        scored.append(list(paths))
        return real(model, paths)

    monkeypatch.setattr(backend, "_score", counting)
    with ProjectStore(project) as store:
        sources = dict(store.items())
    tasks = [{"id": n, "data": {"learnloss_id": 4}} for n in range(2_000)]
    tasks += [{"id": 5_000 + n, "data": {"learnloss_id": 12}} for n in range(3)]
    results = client.post("/predict", json={"tasks": tasks}).json()["results"]
    assert len(results) == len(tasks)
    assert sorted(path for call in scored for path in call) == sorted([sources[4], sources[12]])
    assert all(entry == results[0] for entry in results[:2_000]) and "score" in results[0]
    assert all(entry == results[-1] for entry in results[2_000:]) and "score" in results[-1]


def test_unknown_tasks_are_logged_in_one_line_per_request(project, caplog):
    """m3: 500 tasks naming nothing of the project → empty predictions and ONE log line (count, first ids)."""
    backend, client = _client(project)
    assert backend.load()
    tasks = [{"id": 900 + n, "data": {"image": f"/data/local-files/?d=elsewhere/{n}.png"}} for n in range(500)]
    with caplog.at_level(logging.INFO, logger="learnloss.serve"):
        results = client.post("/predict", json={"tasks": tasks}).json()["results"]
    assert all(entry["result"] == [] and "score" not in entry for entry in results) and len(results) == 500
    lines = [r.getMessage() for r in caplog.records if r.name == "learnloss.serve"]
    assert len(lines) == 1 and lines[0].startswith("500 of 500 tasks") and "900, 901" in lines[0], lines[:3]
    assert "another project" in lines[0]  # the first refusal's reason
    # an id and a path that name different items name none
    with ProjectStore(project) as store:
        sources = dict(store.items())
    answer = client.post("/predict", json={"tasks": [{"id": 1, "data": {"learnloss_id": 4, "path": sources[12]}},
                                                      {"id": 2, "data": {"learnloss_id": 4, "path": sources[4]}}]})
    first, second = answer.json()["results"]
    assert first["result"] == [] and "score" not in first and second["result"] and "score" in second


def test_serve_refuses_bad_limits_in_one_line(project, capsys, monkeypatch):
    monkeypatch.delenv("LEARNLOSS_SERVE_TOKEN", raising=False)
    for flags, fragment in [(["--allowed-host", "http://labels.example.org:80/"], "--allowed-host"),
                            (["--max-body-mb", "0"], "--max-body-mb"), (["--max-body-mb", "nan"], "--max-body-mb")]:
        assert main(["serve", str(project), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert fragment in err and len(err.splitlines()) == 1, err
    with pytest.raises(UsageError, match="--max-requests"):
        ServeLimits(max_requests=0)
