"""The HTTP face of :class:`~learnloss.labeling.backend.LabelStudioBackend`: a FastAPI application served by uvicorn.

Routes follow Label Studio's ML-backend protocol (``GET /health``, ``POST /setup``, ``POST /predict``, ``POST
/webhook``, ``POST /train``, ``GET /versions``, ``POST /validate``). A refused request answers its HTTP status and
``{"error": "<one line: what and what to do>"}``. Work that reads the model or the store runs in FastAPI's thread
pool, never on the event loop.

The server binds to 127.0.0.1 unless told otherwise, and bound to any other address it requires a token: every
request must then carry ``Authorization: Bearer <token>`` (or ``Token <token>``, or HTTP basic auth with the token
as password — what Label Studio's *Basic Auth* setting of a model connection sends). Which hosts a request may name,
the token, the body's size, the tasks of a ``/predict`` and the requests processed at once are checked in one place,
:mod:`learnloss.serve.limits` (:class:`~learnloss.serve.limits.ServeLimits`, applied by its
:class:`~learnloss.serve.limits.RequestGuard` before any route runs).
"""

from __future__ import annotations

import logging
from typing import Any

from learnloss.errors import UsageError
from learnloss.labeling.backend import BackendError, LabelStudioBackend
from learnloss.serve.limits import RequestGuard, ServeLimits, is_loopback

__all__ = ["ServeLimits", "check_binding", "create_app", "run_server"]

log = logging.getLogger("learnloss.serve")


def check_binding(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token.

    Raises:
        UsageError: ``host`` is not a loopback address and no token is set, or the token is too short.
    """
    if token is not None and len(token) < 16:
        raise UsageError("the token must be at least 16 characters; make one with: python -c \"import secrets; "
                         "print(secrets.token_urlsafe(24))\"")
    if not is_loopback(host) and not token:
        raise UsageError(f"--host {host} lets other machines reach the project's labels; set a token first "
                         "(LEARNLOSS_SERVE_TOKEN=... or --token), or bind to 127.0.0.1")


def create_app(backend: LabelStudioBackend, token: str | None = None, limits: ServeLimits | None = None) -> Any:
    """The FastAPI application of ``backend`` behind its :class:`~learnloss.serve.limits.RequestGuard`: with
    ``token``, every request must present it; ``limits`` (default: :class:`ServeLimits`'s defaults) bound hosts,
    bodies, tasks and requests at once."""
    from fastapi import Body, FastAPI, Request
    from fastapi.responses import JSONResponse

    bounds = limits if limits is not None else ServeLimits()
    app = FastAPI(title="learnloss ML backend", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(RequestGuard, limits=bounds, token=token)  # before any route runs, before a body is read

    @app.exception_handler(BackendError)
    async def refused(request: Request, error: BackendError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(UsageError)
    async def unusable(request: Request, error: UsageError) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, error)
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.get("/")
    @app.get("/health")
    def health() -> dict[str, Any]:
        return backend.health()

    @app.post("/setup")
    def setup(payload: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return backend.setup(payload)

    @app.post("/validate")
    def validate(payload: dict[str, Any] = Body(...)) -> dict[str, Any]:
        config = payload.get("config")
        return backend.setup({"schema": config}) if isinstance(config, str) else backend.setup({})

    @app.post("/predict")
    def predict(payload: dict[str, Any] = Body(...)) -> dict[str, Any]:
        bounds.check_tasks(payload.get("tasks"), "/predict")
        return backend.predict(payload)

    @app.post("/webhook")
    def webhook(payload: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return backend.webhook(payload)

    @app.post("/train")
    def train(payload: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return backend.train(payload)

    @app.get("/versions")
    def versions() -> dict[str, Any]:
        return {"versions": [backend.model_version]}

    return app


def run_server(backend: LabelStudioBackend, host: str = "127.0.0.1", port: int = 9090, token: str | None = None,
               log_level: str = "info", limits: ServeLimits | None = None) -> None:
    """Serve ``backend`` on ``host:port`` until interrupted (uvicorn, one process), within ``limits``."""
    import uvicorn

    check_binding(host, token)
    uvicorn.run(create_app(backend, token, limits), host=host, port=port, log_level=log_level, access_log=False)
