"""Faults tried on the served generator (issue #21, items 2 and 8): `mlflow models serve` of a
logged conditional generator on loopback, fed huge, non-finite and mistyped requests.

The generator has the digits' real latent size (z_dim 100), so the 200,000-latent request is
the issue's 413 MB body. A thread samples the server's process tree (psutil) during the big
requests; 1 GiB over idle it kills the server, so a regression fails fast instead of eating the
machine (the issue saw 6 GB)."""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import mlflow
import numpy as np
import psutil
import pytest
from conftest import TINY_EXPERIMENT, free_port, prepare_project, stop_group, tiny_params, wait_http
from test_mlflow_models import _env, _post, _run_id, _uri

pytestmark = pytest.mark.slow

Z_DIM, CAP = 100, 256  # the digits' latent size; train.serve_max_latents' default
MIB = 1024**2
# While refusing, the server holds at most the gate's byte limit (1.7 MB here) and its parse: its
# tree (the `mlflow models serve` CLI and the uvicorn worker, ~1 GB idle) may grow by GROWTH at
# most, and stay under PEAK in all (the 200k request: > 6 GB, killed).
GROWTH, PEAK = 64 * MIB, 1536 * MIB


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A conditional generator "cz" (z_dim 100) trained by the real CLI with `log_model: true`,
    and `mlflow models serve` of it: (root, port, server process)."""
    root = tmp_path_factory.mktemp("served")
    raw = tiny_params(**{"train.log_model": True, "tracking.uri": _uri(root)})
    raw["experiments"] = {"cz": {**TINY_EXPERIMENT, "variant": "cgan", "z_dim": Z_DIM}}
    p = prepare_project(root, raw)
    result = subprocess.run(
        [sys.executable, "-m", "dcganlab", "train", "-p", str(root / "params.yaml")],
        cwd=root,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    port, log = free_port(), open(root / "serve.log", "w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            f"runs:/{_run_id(root, 'cz')}/generator",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=root,
        env=_env(root),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, root / "serve.log")
        yield p.root, port, proc
    finally:
        stop_group(proc)
        log.close()


class PeakRss:
    """Samples the RSS summed over a process tree every 20 ms; kills the group 1 GiB over idle."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.peak, self.killed = proc, 0, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def rss(self) -> int:
        root = psutil.Process(self.proc.pid)
        total = 0
        for p in [root, *root.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.rss())
            if self.peak > self.idle + 1024 * MIB and not self.killed:
                self.killed = True
                os.killpg(self.proc.pid, signal.SIGKILL)

    def __enter__(self):
        self.idle = self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _big_body(n: int) -> tuple[int, object]:
    """The issue's request, {"inputs": {"z": n latents, "labels": n labels}}, as (its length, a
    generator of its chunks): 16 distinct JSON latents of Z_DIM floats (~2 KB each), repeated,
    so the test process never holds the whole body."""
    rows = [json.dumps(r.tolist()).encode() for r in np.random.default_rng(0).standard_normal((16, Z_DIM))]
    head, tail = b'{"inputs": {"z": [', b'], "labels": [' + b", ".join([b"3"] * n) + b"]}}"

    def chunks():
        yield head
        for start in range(0, n, 2000):
            yield (b", " if start else b"") + b", ".join(rows[i % 16] for i in range(start, min(n, start + 2000)))
        yield tail

    return len(head) + sum(len(rows[i % 16]) for i in range(n)) + 2 * (n - 1) + len(tail), chunks()


def _send(port: int, chunks, length: int | None) -> tuple[int, dict]:
    """POST the chunks to /invocations: with a Content-Length, or chunked (no length) when None.
    The server may answer before the body is all sent; it reads the rest unread."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest("POST", "/invocations")
        conn.putheader("Content-Type", "application/json")
        conn.putheader(*(("Content-Length", str(length)) if length is not None else ("Transfer-Encoding", "chunked")))
        conn.endheaders()
        for chunk in chunks:
            conn.send(chunk if length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if length is None:
            conn.send(b"0\r\n\r\n")
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _generate(port: int, z: np.ndarray, labels: list) -> tuple[int, dict]:
    return _post(f"http://127.0.0.1:{port}/invocations", {"inputs": {"z": z.tolist(), "labels": labels}})


def _still_serves(port: int) -> None:
    z = np.random.default_rng(5).standard_normal((2, Z_DIM)).astype(np.float32)
    status, body = _generate(port, z, [4, 7])
    assert status == 200, body
    assert np.asarray(body["predictions"]).shape == (2, 1, 16, 16)


def test_a_200000_latent_request_is_refused_in_bounded_memory(served):
    _, port, proc = served
    length, chunks = _big_body(200_000)
    assert length > 413e6  # the 413 MB
    with PeakRss(proc) as rss:
        status, body = _send(port, chunks, length)
    assert not rss.killed, f"the server grew by over 1 GiB from {rss.idle // MIB} MiB"
    assert status == 413, body
    assert f"up to {CAP} latents per request" in body["message"] and "serve_max_latents" in body["message"]
    assert rss.peak - rss.idle < GROWTH and rss.peak < PEAK, (rss.idle // MIB, rss.peak // MIB)
    _still_serves(port)


def test_a_100_mb_body_of_the_wrong_shape_streamed_without_a_length_is_refused(served):
    """No Content-Length to refuse on: the gate stops at its byte limit while the body streams."""
    _, port, proc = served
    row = json.dumps([0.5] * 1000).encode()  # latents 10x too wide
    middle = b", " + b", ".join([row] * 100)
    assert len(row) + 200 * len(middle) > 100e6
    chunks = (b'{"inputs": {"z": [' + row, *(middle for _ in range(200)), b"]}}")
    with PeakRss(proc) as rss:
        status, body = _send(port, chunks, None)
    assert not rss.killed, f"the server grew by over 1 GiB from {rss.idle // MIB} MiB"
    assert status == 413, body
    assert "request body too large" in body["message"]
    assert rss.peak - rss.idle < GROWTH and rss.peak < PEAK, (rss.idle // MIB, rss.peak // MIB)
    _still_serves(port)


def test_more_latents_than_the_cap_get_a_400_that_says_the_cap(served):
    _, port, _ = served
    z = np.zeros((CAP + 1, Z_DIM), np.float32)  # a small body: under the byte limit
    status, body = _generate(port, z, [1] * (CAP + 1))
    assert status == 400, body
    assert f"too many latents: {CAP + 1}" in body["message"] and f"at most {CAP} images" in body["message"]
    status, _ = _generate(port, z[:CAP], [1] * CAP)
    assert status == 200


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_latents_are_refused(served, bad):
    _, port, _ = served
    row = ", ".join(["0.1"] * (Z_DIM - 1) + [bad])
    payload = f'{{"inputs": {{"z": [[{row}]], "labels": [2]}}}}'.encode()
    status, body = _send(port, [payload], len(payload))
    assert status == 400, body
    assert "latents must be finite numbers" in body["message"] and bad in body["message"]


@pytest.mark.parametrize("labels", [[1.5, 2], [True, 2], [3, 10], [-1, 2], ["3", 2]])
def test_labels_must_be_integers_in_range_in_every_json_format(served, labels):
    """MLflow casts labels to the signature's int64 before `predict` sees them (1.5, true and "3"
    were answered 200 as 1, 1 and 3): the gate checks them as sent, in each of MLflow's formats."""
    _, port, _ = served
    z = np.zeros((2, Z_DIM), np.float32).tolist()
    records = [{"z": row, "labels": y} for row, y in zip(z, labels)]
    for payload in (
        {"inputs": {"z": z, "labels": labels}},
        {"instances": records},
        {"dataframe_records": records},
        {"dataframe_split": {"columns": ["z", "labels"], "data": [[row, y] for row, y in zip(z, labels)]}},
    ):
        status, body = _post(f"http://127.0.0.1:{port}/invocations", payload)
        assert status == 400, (next(iter(payload)), body)
        assert "'labels' must be integers in 0..9: got " in body["message"], body


def test_good_requests_pass_the_gate_in_every_json_format(served):
    _, port, _ = served
    z = np.random.default_rng(6).standard_normal((2, Z_DIM)).tolist()
    records = [{"z": row, "labels": y} for row, y in zip(z, [0, 9])]
    for payload in (
        {"inputs": {"z": z, "labels": [0, 9]}},
        {"instances": records},
        {"dataframe_records": records},
        {"dataframe_split": {"columns": ["z", "labels"], "data": [[z[0], 0], [z[1], 9]]}},
    ):
        status, body = _post(f"http://127.0.0.1:{port}/invocations", payload)
        assert status == 200 and np.asarray(body["predictions"]).shape == (2, 1, 16, 16), (next(iter(payload)), body)


def test_a_wrong_label_count_gets_the_models_own_message(served):
    """Past the gate, the model's own refusal reaches the client (MLflow would hide a ValueError's)."""
    _, port, _ = served
    status, body = _generate(port, np.zeros((3, Z_DIM), np.float32), [1, 2])
    assert status == 400, body
    assert "needs 'labels': 3 integers in 0..9" in body["message"]


def test_pyfunc_caps_and_checks_its_input_for_python_callers(served):
    """The refusals are ValueErrors to Python callers, and MlflowExceptions (so the scoring server
    passes their message on). The class is the logged serving.py's, loaded under another name."""
    root, _, _ = served
    mlflow.set_tracking_uri(_uri(root))
    uri = f"runs:/{_run_id(root, 'cz')}/generator"
    model = mlflow.pyfunc.load_model(uri)
    z, labels = np.zeros((CAP + 1, Z_DIM), np.float32), np.ones(CAP + 1, np.int64)
    with pytest.raises(ValueError, match=f"at most {CAP} images") as refused:
        model.predict({"z": z, "labels": labels})
    assert (
        isinstance(refused.value, mlflow.exceptions.MlflowException)
        and refused.value.error_code == "INVALID_PARAMETER_VALUE"
    )
    assert model.predict({"z": z[:CAP], "labels": labels[:CAP]}).shape == (CAP, 1, 16, 16)
    z[0, 3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        model.predict({"z": z[:2], "labels": labels[:2]})
    # the cap is the logged model config; a serving-time config may change it
    small = mlflow.pyfunc.load_model(uri, model_config={"max_latents": 2})
    with pytest.raises(ValueError, match="at most 2 images"):
        small.predict({"z": np.zeros((3, Z_DIM), np.float32), "labels": np.ones(3, np.int64)})
