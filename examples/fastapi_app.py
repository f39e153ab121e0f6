"""A FastAPI app with the job-status endpoints mounted under /jobs-api.

API_KEY=s3cret JOBSTATUS_STORE=sqlite:jobs.db uvicorn fastapi_app:app
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.routing import Mount

from jobstatus import AsyncRecorder, make_service, open_store, status_routes

store = open_store(os.environ.get("JOBSTATUS_STORE", "sqlite:jobs.db"))
service = make_service(store, api_keys=[os.environ["API_KEY"]])
recorder = AsyncRecorder(store)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    store.close()


app = FastAPI(lifespan=lifespan)


@app.get("/hello")
def hello() -> dict[str, str]:
    return {"hello": "from fastapi"}


@app.post("/render/{job_id}", status_code=202)
async def render(job_id: str) -> dict[str, str]:
    # A real app hands the work to its queue; each state is one line.
    await recorder.queued(job_id, task="render")
    await recorder.running(job_id)
    await recorder.done(job_id, {"file_url": f"https://example.com/{job_id}.mp4"})
    return {"job_id": job_id}


app.router.routes.append(Mount("/jobs-api", routes=status_routes(service)))
