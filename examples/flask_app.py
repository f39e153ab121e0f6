"""A Flask app with the job-status endpoints mounted under /jobs-api.

API_KEY=s3cret JOBSTATUS_STORE=sqlite:jobs.db gunicorn flask_app:app
"""

import os

from flask import Flask

from jobstatus import WSGIApp, make_service, open_store

app = Flask(__name__)


@app.get("/hello")
def hello() -> dict[str, str]:
    return {"hello": "from flask"}


service = make_service(
    open_store(os.environ.get("JOBSTATUS_STORE", "sqlite:jobs.db")),
    api_keys=[os.environ["API_KEY"]],
)
# The two endpoints answer under /jobs-api; every other path stays Flask's.
app.wsgi_app = WSGIApp(service, prefix="/jobs-api", fallback=app.wsgi_app)  # type: ignore[method-assign]

if __name__ == "__main__":
    app.run(port=8000)
