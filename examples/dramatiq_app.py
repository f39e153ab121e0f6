"""Dramatiq, with every message's state served by the job-status endpoints.

REDIS_URL=redis://localhost:6379/0 JOBSTATUS_STORE=sqlite:jobs.db \
    dramatiq dramatiq_app            # the worker
python dramatiq_app.py               # sends one message; prints its job id
"""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from jobstatus_adapters.dramatiq import install, progress

broker = RedisBroker(url=os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
dramatiq.set_broker(broker)
# One call: queued, running, progress, done / failed, retries, skips.
install(broker, os.environ.get("JOBSTATUS_STORE", "sqlite:jobs.db"))


@dramatiq.actor(max_retries=2)
def resize(width: int) -> dict[str, str]:
    for step in range(1, 4):
        progress(step, 3, "resizing")  # finds this message's job id itself
    return {"file_url": f"https://example.com/{width}.png"}


if __name__ == "__main__":
    print(resize.send(640).message_id)  # the job id: GET /v1/job/<id>
