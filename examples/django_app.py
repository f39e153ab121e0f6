"""A one-file Django project with the job-status endpoints under /jobs-api.

export API_KEY=s3cret JOBSTATUS_STORE=sqlite:jobs.db
gunicorn -k gthread --threads 24 django_app:application

Threads: waits hold one each (WSGIApp's max_waiters, 16) and 8 serve the rest;
gunicorn's default sync worker answers a wait at once (docs/embedding.md).
"""

import os

from django.conf import settings

settings.configure(
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only"),
)

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

from jobstatus import Recorder, WSGIApp, make_service, open_store  # noqa: E402

store = open_store(os.environ.get("JOBSTATUS_STORE", "sqlite:jobs.db"))
service = make_service(store, api_keys=[os.environ["API_KEY"]])
recorder = Recorder(store)


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"hello": "from django"})


def render(request: HttpRequest, job_id: str) -> JsonResponse:
    # A real app hands the work to its queue; each state is one line.
    recorder.queued(job_id, task="render")
    recorder.running(job_id)
    recorder.done(job_id, {"file_url": f"https://example.com/{job_id}.mp4"})
    return JsonResponse({"job_id": job_id}, status=202)


urlpatterns = [path("hello", hello), path("render/<str:job_id>", render)]

# In a real project this goes in wsgi.py, around get_wsgi_application().
application = WSGIApp(service, prefix="/jobs-api", fallback=get_wsgi_application())
