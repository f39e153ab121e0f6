"""A stand-in for the Toolkit API's own job-status app, as it is deployed.

A small Flask app, served by gunicorn with 2 sync workers (bench/toolkit_app/
run.py starts it so), whose two routes do per request what the Toolkit does:

- ``POST /v1/toolkit/job/status``: read ``jobs/<job_id>.json``;
- ``POST /v1/toolkit/jobs/status``: list ``jobs/``, stat every file, parse
  the ones written within ``since_seconds`` (default 600);
- and both record the request itself as a job file (``running`` when it
  starts, ``done`` with its answer when it ends), as the Toolkit's request
  wrapper does — which is why its listing grows with its own traffic.

Answers carry the envelope of SPEC §3. Storage is ``$LOCAL_STORAGE_PATH``,
the key ``$API_KEY``. Not part of the package: bench only.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

from flask import Flask, Response, request

STORAGE = os.environ["LOCAL_STORAGE_PATH"]
JOBS_DIR = os.path.join(STORAGE, "jobs")
API_KEY = os.environ["API_KEY"]
QUEUE_ID = id(object())

app = Flask(__name__)


def record(job_id: str, status: str, response: Any = None) -> None:
    """The request as a job file, as the Toolkit writes one."""
    path = os.path.join(JOBS_DIR, job_id + ".json")
    with open(path, "w") as file:
        json.dump(
            {
                "job_id": job_id,
                "job_status": status,
                "queue_id": QUEUE_ID,
                "process_id": os.getpid(),
                "response": response,
            },
            file,
        )


def envelope(
    endpoint: str, code: int, job_id: str, payload: Any, message: str, started: float
) -> Response:
    elapsed = round(time.time() - started, 3)
    body: dict[str, Any] = {
        "endpoint": endpoint,
        "code": code,
        "id": None,
        "job_id": job_id,
        "response": payload,
        "message": message,
        "pid": os.getpid(),
        "queue_id": QUEUE_ID,
        "queue_length": 0,
        "run_time": elapsed,
        "queue_time": 0,
        "total_time": elapsed,
        "build_number": "toolkit-stand-in",
    }
    if code != 200:
        body["error"] = message
    return Response(json.dumps(body), status=code, mimetype="application/json")


def recorded(endpoint: str, answer: Any) -> Response:
    """Run ``answer(job_id)`` -> (code, payload, message), recording the
    request as a job around it."""
    started = time.time()
    if request.headers.get("x-api-key") != API_KEY:
        return envelope(endpoint, 401, str(uuid.uuid4()), None, "Unauthorized", started)
    request_id = str(uuid.uuid4())
    record(request_id, "running")
    code, payload, message, job_id = answer(request.get_json(silent=True) or {})
    record(request_id, "done", payload if code == 200 else None)
    return envelope(endpoint, code, job_id or request_id, payload, message, started)


@app.post("/v1/toolkit/job/status")
def job_status() -> Response:
    def answer(body: dict[str, Any]) -> tuple[int, Any, str, str | None]:
        job_id = str(body.get("job_id", ""))
        path = os.path.join(JOBS_DIR, job_id + ".json")
        if not os.path.exists(path):
            return 404, None, "Job not found", job_id
        with open(path) as file:
            return 200, json.load(file), "success", job_id

    return recorded("/v1/toolkit/job/status", answer)


@app.post("/v1/toolkit/jobs/status")
def jobs_status() -> Response:
    def answer(body: dict[str, Any]) -> tuple[int, Any, str, str | None]:
        since = body.get("since_seconds") or 600
        cutoff = time.time() - since
        statuses = {}
        for name in os.listdir(JOBS_DIR):
            if not name.endswith(".json"):
                continue
            path = os.path.join(JOBS_DIR, name)
            if os.path.getmtime(path) >= cutoff:
                try:
                    with open(path) as file:
                        job = json.load(file)
                except ValueError:
                    continue  # another worker's request, half written
                if "job_status" in job:
                    statuses[name[:-5]] = job["job_status"]
        return 200, statuses, "success", None

    return recorded("/v1/toolkit/jobs/status", answer)
