"""A one-file Django project with the job-status endpoints under /jobs-api.

API_KEY=s3cret JOBSTATUS_STORE=sqlite:jobs.db gunicorn django_app:application
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

from jobstatus import WSGIApp, make_service, open_store  # noqa: E402


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"hello": "from django"})


urlpatterns = [path("hello", hello)]

service = make_service(
    open_store(os.environ.get("JOBSTATUS_STORE", "sqlite:jobs.db")),
    api_keys=[os.environ["API_KEY"]],
)
# In a real project this goes in wsgi.py, around get_wsgi_application().
application = WSGIApp(service, prefix="/jobs-api", fallback=get_wsgi_application())
