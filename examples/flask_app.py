"""A Flask app with the job-status endpoints mounted under /jobs-api.

export API_KEY=s3cret JOBSTATUS_STORE=sqlite:jobs.db
gunicorn -k gthread --threads 24 flask_app:app

Threads: waits hold one each (WSGIApp's max_waiters, 16) and 8 serve the rest;
gunicorn's default sync worker answers a wait at once (docs/embedding.md).
"""

import os

from flask import Flask

from jobstatus import Recorder, WSGIApp, make_service, open_store

app = Flask(__name__)


@app.get("/hello")
def hello() -> dict[str, str]:
    return {"hello": "from flask"}


store = open_store(os.environ.get("JOBSTATUS_STORE", "sqlite:jobs.db"))
service = make_service(store, api_keys=[os.environ["API_KEY"]])
recorder = Recorder(store)


@app.post("/render/<job_id>")
def render(job_id: str) -> tuple[dict[str, str], int]:
    # A real app hands the work to its queue; each state is one line.
    recorder.queued(job_id, task="render")
    recorder.running(job_id)
    recorder.done(job_id, {"file_url": f"https://example.com/{job_id}.mp4"})
    return {"job_id": job_id}, 202


# The endpoints answer under /jobs-api; every other path stays Flask's.
app.wsgi_app = WSGIApp(service, prefix="/jobs-api", fallback=app.wsgi_app)  # type: ignore[method-assign]

if __name__ == "__main__":
    app.run(port=8000)
