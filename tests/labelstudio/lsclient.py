"""A real Label Studio server for the tests: started once per test run, driven through its HTTP API, stopped by PID.

The server comes from the virtual environment the README's test command makes (``.lsvenv``, ``pip install
label-studio``: its pins clash with ours), or from ``LEARNLOSS_LABEL_STUDIO`` (the path of a ``label-studio``
executable). Without either the tests that need it are skipped — unless ``LEARNLOSS_REQUIRE_LABEL_STUDIO=1`` (CI),
which makes a missing server a failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("red", "green", "blue")
#: Seconds the server may take to answer its health check (a fresh database migrates first: about a minute).
START_TIMEOUT = float(os.environ.get("LEARNLOSS_LABEL_STUDIO_TIMEOUT", 300))


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop a server started with ``start_new_session=True`` and everything it started (its process group), by
    PID: SIGTERM, then SIGKILL after 20 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def executable() -> Path | None:
    """The ``label-studio`` executable to run, or None."""
    named = os.environ.get("LEARNLOSS_LABEL_STUDIO")
    if named:
        return Path(named)
    candidate = ROOT / ".lsvenv" / "bin" / "label-studio"
    return candidate if candidate.exists() else None


class HTTPFailure(AssertionError):
    """A request answered with an error status: the status and the body say why."""

    def __init__(self, method: str, url: str, status: int, body: bytes) -> None:
        super().__init__(f"{method} {url} -> {status}: {body[:600]!r}")
        self.status = status
        self.body = body


def request(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, raw: bool = False,
            timeout: float = 60) -> Any:
    """One HTTP request; JSON in and out unless ``raw`` (then the body's bytes)."""
    headers = dict(headers or {})
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    call = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(call, timeout=timeout) as response:
            payload = response.read()
    except urllib.error.HTTPError as error:
        raise HTTPFailure(method, url, error.code, error.read()) from None
    if raw:
        return payload
    return json.loads(payload) if payload else None


@dataclass
class LabelStudio:
    """A running Label Studio: its URL, API token, the document root it serves local files from, and its log."""

    url: str
    token: str
    document_root: Path
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def api(self, method: str, path: str, body: Any = None, raw: bool = False) -> Any:
        return request(method, self.url + path, body, {"Authorization": f"Token {self.token}"}, raw=raw)

    def create_project(self, title: str, config: str) -> int:
        return int(self.api("POST", "/api/projects", {"title": title, "label_config": config})["id"])

    def add_local_storage(self, project: int, folder: Path) -> int:
        """A *Local files* source storage on ``folder`` (what the README's step in Settings → Cloud Storage makes)."""
        storage = self.api("POST", "/api/storages/localfiles", {
            "project": project, "path": str(folder), "title": folder.name, "use_blob_urls": True})
        return int(storage["id"])

    def sync_storage(self, storage: int) -> None:
        self.api("POST", f"/api/storages/localfiles/{storage}/sync")

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self.api("POST", f"/api/projects/{project}/import", tasks))

    def tasks(self, project: int) -> list[dict[str, Any]]:
        found = self.api("GET", f"/api/tasks?project={project}&page_size=1000&fields=all")
        return list(found["tasks"] if isinstance(found, dict) else found)

    def annotate(self, task: int, choice: str | None, cancelled: bool = False) -> dict[str, Any]:
        result = [] if choice is None else [{"from_name": "label", "to_name": "image", "type": "choices",
                                             "value": {"choices": [choice]}}]
        return dict(self.api("POST", f"/api/tasks/{task}/annotations", {"result": result, "was_cancelled": cancelled}))

    def annotate_results(self, task: int, results: list[dict[str, Any]], cancelled: bool = False) -> dict[str, Any]:
        """Post an annotation holding any ``results`` (regions, per-region choices), as Label Studio's labeling
        interface does when the labeler presses Submit (or Skip: ``cancelled``)."""
        return dict(self.api("POST", f"/api/tasks/{task}/annotations", {"result": results, "was_cancelled": cancelled}))

    def predictions(self, task: int) -> list[dict[str, Any]]:
        """The predictions Label Studio stores for ``task`` (every model version)."""
        found = self.api("GET", f"/api/predictions?task={task}")
        return list(found["results"] if isinstance(found, dict) else found)

    def export(self, project: int, fmt: str, all_tasks: bool = False) -> bytes:
        """The project exported as ``fmt``: the tasks with annotations (cancelled ones included), or with
        ``all_tasks`` every task."""
        extra = "&download_all_tasks=true" if all_tasks else ""
        return bytes(self.api("GET", f"/api/projects/{project}/export?exportType={fmt}{extra}", raw=True))

    def stop(self) -> None:
        """Stop the server and everything it started (its process group), by PID."""
        if self.process is not None:
            stop_process(self.process)


def start(binary: Path, folder: Path, timeout: float = START_TIMEOUT) -> LabelStudio:
    """Start Label Studio on a free port of 127.0.0.1 with its data in ``folder``; wait until it answers.

    Raises:
        AssertionError: it exited or did not answer within ``timeout`` seconds (the log's tail says why);
            the process is stopped first.
    """
    port = free_port()
    document_root = folder / "documents"
    document_root.mkdir(parents=True, exist_ok=True)
    token = "learnloss-tests-token-0123456789"
    env = {
        **os.environ,
        "LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
        # Label Studio refuses ML backends and webhooks on local addresses unless told (the README says why)
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "DJANGO_DB": "sqlite",
    }
    log = folder / "label-studio.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(binary), "start", "--no-browser", "--data-dir", str(folder / "data"), "--internal-host", "127.0.0.1",
             "--port", str(port), "--username", "tests@learnloss.invalid", "--password", "learnloss-tests-pw",
             "--user-token", token, "--enable-legacy-api-token"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder, start_new_session=True,
        )
    server = LabelStudio(f"http://127.0.0.1:{port}", token, document_root, log, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"Label Studio exited with {process.returncode} before answering; its log ends:\n"
                                 + log.read_text(errors="replace")[-3000:])
        try:
            if request("GET", server.url + "/health", timeout=5).get("status") == "UP":
                return server
        except (OSError, HTTPFailure, ValueError):
            pass
        time.sleep(2)
    server.stop()
    raise AssertionError(f"Label Studio did not answer within {timeout:.0f} s; its log ends:\n"
                         + log.read_text(errors="replace")[-3000:])


def make_images(folder: Path, per_class: int = 10, seed: int = 0) -> dict[str, str]:
    """Small coloured noise images in a flat folder, named without their class (with a space, which URLs must
    quote): file name -> class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    truth = {}
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            pixels = rng.integers(0, 90, size=(16, 16, 3), dtype=np.uint8)
            pixels[..., c] += 160
            file = f"img {c * per_class + i:02d}.png"
            Image.fromarray(pixels).save(folder / file)
            truth[file] = name
    return truth


def trained_photos_project(base: Path) -> tuple[Path, dict[str, str]]:
    """A project of 18 images under ``base/documents/photos`` (:func:`make_images`, 6 per class; 2 per class labeled
    by init) after one query, so that it has a model that answers ``/predict``: the project and file name -> class."""
    from learnloss.cli.main import main

    images = base / "documents" / "photos"
    truth = make_images(images, per_class=6)
    labels = base / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{n},{c}\n" for n, c in truth.items() if int(n[4:6]) % 6 < 2))
    project = base / "project"
    assert main(["init", str(project), "--images", str(images), "--classes", ",".join(CLASSES), "--labels",
                 str(labels), "--epochs", "1", "--image-size", "16", "--seed", "0"]) == 0
    assert main(["query", str(project), "--k", "2", "--quiet"]) == 0
    return project, truth
