"""A Starlette app with the job-status endpoints mounted under /jobs-api.

API_KEY=s3cret JOBSTATUS_STORE=sqlite:jobs.db uvicorn starlette_app:app
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from jobstatus import AsyncRecorder, make_service, open_store, status_routes

store = open_store(os.environ.get("JOBSTATUS_STORE", "sqlite:jobs.db"))
service = make_service(store, api_keys=[os.environ["API_KEY"]])
recorder = AsyncRecorder(store)


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": "from starlette"})


async def render(request: Request) -> JSONResponse:
    # A real app hands the work to its queue; each state is one line.
    job_id = request.path_params["job_id"]
    await recorder.queued(job_id, task="render")
    await recorder.running(job_id)
    await recorder.done(job_id, {"file_url": f"https://example.com/{job_id}.mp4"})
    return JSONResponse({"job_id": job_id}, status_code=202)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    store.close()  # stops the file store's observer threads, closes SQLite


app = Starlette(
    routes=[
        Route("/hello", hello),
        Route("/render/{job_id}", render, methods=["POST"]),
        Mount("/jobs-api", routes=status_routes(service)),
    ],
    middleware=[
        # Browsers on another origin may poll, with a scoped token
        # (Authorization: Bearer) the host mints for them; If-None-Match
        # and a readable ETag let them poll GET /v1/job/{id} for 304s.
        Middleware(
            CORSMiddleware,
            allow_origins=["https://app.example.com"],
            allow_methods=["GET", "POST"],
            allow_headers=[
                "authorization",
                "content-type",
                "if-none-match",
                "last-event-id",
            ],
            expose_headers=["allow", "etag", "last-modified", "retry-after"],
        )
    ],
    lifespan=lifespan,
)
