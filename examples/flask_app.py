"""A Flask app with the job-status endpoints mounted under /jobs-api.

API_KEY=s3cret JOBSTATUS_STORE=sqlite:jobs.db gunicorn flask_app:app
"""

import os

from flask import Flask

from jobstatus_adapters import make_service
from jobstatus_adapters.wsgi import WSGIApp
from jobstatus_backends import store_from_url

app = Flask(__name__)


@app.get("/hello")
def hello() -> dict[str, str]:
    return {"hello": "from flask"}


service = make_service(
    store_from_url(os.environ.get("JOBSTATUS_STORE", "sqlite:jobs.db")),
    api_keys=[os.environ["API_KEY"]],
)
# The two endpoints answer under /jobs-api; every other path stays Flask's.
app.wsgi_app = WSGIApp(service, prefix="/jobs-api", fallback=app.wsgi_app)  # type: ignore[method-assign]

if __name__ == "__main__":
    app.run(port=8000)
