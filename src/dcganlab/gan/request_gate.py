"""request_gate: what a request to `mlflow models serve` must pass before MLflow parses it.

MLflow 3.17's scoring server reads the whole body (`await request.body()`,
mlflow/pyfunc/scoring_server/__init__.py:493), `json.loads` it (:120), deep-copies it
(mlflow/utils/proto_json_utils.py:511) and casts it to the signature's dtypes (:481) before our
`predict` runs: a 413 MB body cost the worker over 6 GB before `predict` could refuse it, and the
cast hides what `predict` would refuse (labels [1.5, true, "3"] arrive as int64 [1, 1, 3]). Nothing
there takes a body limit: `mlflow models serve` runs `uvicorn mlflow.pyfunc.scoring_server.app:app`
(scoring_server/__init__.py:580; uvicorn 0.55 has no body-size option) on a `FastAPI()` built
without FastAPI's own `max_body_size` (:448). So the model brings its own: `install`, called from
its `load_context`, puts `RequestGate` in front of the scoring app. The gate
- answers 413 to a body over `Limits.max_bytes`, from its Content-Length, or as soon as a
  streamed body passes it, holding at most that much (uvicorn drains the rest unread);
- answers 400, before MLflow parses anything, to a JSON body with NaN/Infinity (not JSON) or a
  number too large for a float, with more than `max_latents` latents, or with labels that are
  not integers in range, in any of MLflow's JSON formats.
Everything else (shapes, other content types) is left to MLflow and to `predict`.

Standard library only: the gate is plain ASGI.
"""

from __future__ import annotations

import json
import math
import sys
import types
from dataclasses import dataclass

SCORING_APP = "mlflow.pyfunc.scoring_server.app"  # the module `mlflow models serve` runs under uvicorn
BYTES_PER_NUMBER = 64  # room for any JSON float ("-1.2345678901234567e-05", 23 bytes) plus separators and indent
ENVELOPE_BYTES = 64 * 1024  # {"inputs": {"z": ..., "labels": ...}, "params": ...}


@dataclass(frozen=True)
class Limits:
    max_latents: int  # latents per request (images per reply)
    z_dim: int
    num_classes: int  # 0: unconditional, labels ignored

    @property
    def max_bytes(self) -> int:
        """The largest body `max_latents` latents (and their labels) can honestly need."""
        return self.max_latents * (self.z_dim + 1) * BYTES_PER_NUMBER + ENVELOPE_BYTES


def install(limits: Limits) -> bool:
    """Gate MLflow's scoring app if this process is `mlflow models serve` importing it.

    mlflow/pyfunc/scoring_server/app.py is `app = init(load_model(...))`: our `load_context` runs
    inside that import, before `app` exists. The half-imported module's class is switched to one
    whose `app` property (a data descriptor: it wins over the module's own `app` global) hands
    uvicorn's `getattr(module, "app")` the gated app; setting a module's `__class__` is Python's
    documented way to customise module attribute access (Data model, 3.3.2.1). Returns whether
    it installed: in any other process (`mlflow.pyfunc.load_model`, `mlflow models predict`)
    it does nothing."""
    module = sys.modules.get(SCORING_APP)
    if module is None or "app" in vars(module) or type(module) is not types.ModuleType:
        return False
    module._dcganlab_limits = limits
    module.__class__ = _GatedScoringApp
    return True


class _GatedScoringApp(types.ModuleType):
    """MLflow's scoring-server module after `install`: its `app` reads as the gated app."""

    @property
    def app(self):
        own = vars(self)
        if "app" not in own:
            raise AttributeError("app")  # still importing
        if "_dcganlab_gated" not in own:
            own["_dcganlab_gated"] = RequestGate(own["app"], own["_dcganlab_limits"])
        return own["_dcganlab_gated"]


class RequestGate:
    """ASGI middleware: POST /invocations is bounded and checked; everything else passes."""

    def __init__(self, app, limits: Limits):
        self.app, self.limits = app, limits

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/invocations":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limits.max_bytes:
            return await _answer(send, 413, self._too_large(int(declared)))
        body = await _read_at_most(receive, self.limits.max_bytes)
        if body is None:
            return await _answer(send, 413, self._too_large(None))
        if headers.get(b"content-type", b"").split(b";")[0].strip() == b"application/json":
            problem = json_problem(body, self.limits)
            if problem:
                return await _answer(send, 400, problem)
        await self.app(scope, _replay(body, receive), send)

    def _too_large(self, size: int | None) -> str:
        sent = f"{size} bytes" if size is not None else "streamed past the limit"
        return (
            f"request body too large ({sent}): this model takes at most {self.limits.max_bytes} bytes "
            f"(up to {self.limits.max_latents} latents per request, its serve_max_latents); "
            "split the latents over several requests"
        )


async def _read_at_most(receive, limit: int) -> bytes | None:
    """The body, or None as soon as it passes `limit` bytes (what was read is dropped)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away: the app sees what came
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive):
    """A `receive` that hands the app the body already read, then waits on the client."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay():
        return pending.pop() if pending else await receive()

    return replay


async def _answer(send, status: int, message: str) -> None:
    """MLflow's own error shape: {"error_code", "message"}."""
    code = "BAD_REQUEST" if status == 400 else "RESOURCE_EXHAUSTED"
    body = json.dumps({"error_code": code, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------- the JSON checks
class _NotFinite(ValueError):
    pass


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf
        raise _NotFinite(text)
    return value


def _no_constants(text: str):
    raise _NotFinite(text)  # NaN, Infinity, -Infinity: Python's json extension, not JSON


def json_problem(body: bytes, limits: Limits) -> str | None:
    """Why this JSON request must be refused, or None (also when it is not JSON, or in a format
    this gate does not read: MLflow answers those)."""
    try:
        payload = json.loads(body, parse_float=_finite, parse_constant=_no_constants)
    except _NotFinite as err:
        return f"latents must be finite numbers: got {err} (NaN and Infinity are not JSON)"
    except ValueError:
        return None
    z, labels = _latents_and_labels(payload)
    if isinstance(z, list) and len(z) > limits.max_latents:
        return (
            f"too many latents: {len(z)}, this model generates at most {limits.max_latents} images per "
            "request (its serve_max_latents); split the latents over several requests"
        )
    if limits.num_classes and labels is not None:
        wrong = [y for y in (labels if isinstance(labels, list) else [labels]) if not _is_label(y, limits.num_classes)]
        if wrong:
            return f"'labels' must be integers in 0..{limits.num_classes - 1}: got {json.dumps(wrong[0])}"
    return None


def _is_label(y, num_classes: int) -> bool:
    return type(y) is int and 0 <= y < num_classes  # bool is an int subclass: true is not a label


def _latents_and_labels(payload) -> tuple:
    """(z, labels) as sent in MLflow's JSON formats (None where absent): named tensors
    {"inputs"|"instances": {"z": [[...]], "labels": [...]}}, a record per latent
    ("instances", "dataframe_records": [{"z": [...], "labels": 3}, ...]), "dataframe_split"
    ({"columns": [...], "data": [[...], ...]}), or a bare array of latents."""
    if not isinstance(payload, dict):
        return None, None
    split = payload.get("dataframe_split")
    if isinstance(split, dict) and isinstance(split.get("columns"), list) and isinstance(split.get("data"), list):
        data = [dict(zip(split["columns"], row)) for row in split["data"] if isinstance(row, list)]
    else:
        data = payload.get("inputs", payload.get("instances", payload.get("dataframe_records")))
    if isinstance(data, dict):
        return data.get("z"), data.get("labels")
    if isinstance(data, list) and data and all(isinstance(row, dict) for row in data):
        return data, [row["labels"] for row in data if "labels" in row]
    return data, None
