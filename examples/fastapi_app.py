"""A FastAPI app with the job-status endpoints mounted under /jobs-api.

API_KEY=s3cret JOBSTATUS_STORE=sqlite:jobs.db uvicorn fastapi_app:app
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.routing import Mount

from jobstatus import make_service, open_store, status_routes

store = open_store(os.environ.get("JOBSTATUS_STORE", "sqlite:jobs.db"))
service = make_service(store, api_keys=[os.environ["API_KEY"]])


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    store.close()


app = FastAPI(lifespan=lifespan)


@app.get("/hello")
def hello() -> dict[str, str]:
    return {"hello": "from fastapi"}


app.router.routes.append(Mount("/jobs-api", routes=status_routes(service)))
