"""Huey, with every task's state served by the job-status endpoints.

REDIS_URL=redis://localhost:6379/0 JOBSTATUS_STORE=sqlite:jobs.db \
    huey_consumer huey_app.huey      # the consumer
python -c 'import huey_app; print(huey_app.resize(640).id)'  # the job id

(Tasks are enqueued by the module's name, so not from `python huey_app.py`,
whose tasks would be named after ``__main__``.)
"""

import os

from huey import RedisHuey

from jobstatus_adapters.huey import install, progress

huey = RedisHuey("example", url=os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
# One call: queued, running, progress, done / failed, retries, revokes.
install(huey, os.environ.get("JOBSTATUS_STORE", "sqlite:jobs.db"))


@huey.task(retries=2)
def resize(width: int) -> dict[str, str]:
    for step in range(1, 4):
        progress(step, 3, "resizing")  # finds this task's job id itself
    return {"file_url": f"https://example.com/{width}.png"}
