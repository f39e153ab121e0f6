"""A FastAPI app with the job-status endpoints mounted under /jobs-api.

API_KEY=s3cret JOBSTATUS_STORE=sqlite:jobs.db uvicorn fastapi_app:app
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.routing import Mount

from jobstatus_adapters import make_service
from jobstatus_adapters.starlette import status_routes
from jobstatus_backends import store_from_url

store = store_from_url(os.environ.get("JOBSTATUS_STORE", "sqlite:jobs.db"))
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
