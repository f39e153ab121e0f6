"""JSON Schemas of bodies and answers, for the rows of the contract table.

The OpenAPI document is built from them; they say exactly what the handlers
accept, so that a client generated from the document sends nothing refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .reading import MAX_BATCH
from .tokens import MAX_TTL_SECONDS


@dataclass(frozen=True, slots=True)
class Setting:
    """A bound that is a setting of the service (``max_wait``): the document
    says the value the serving instance uses."""

    name: str


MAX_WAIT = Setting("max_wait")

Schema = dict[str, Any]

# JSON Schema patterns are unanchored; "\Z"-free so that ECMA tools read them.
JOB_ID: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "pattern": "^[A-Za-z0-9_-][A-Za-z0-9._-]*$",
}
JOB_IDS: Schema = {
    "type": "array",
    "items": JOB_ID,
    "minItems": 1,
    "maxItems": MAX_BATCH,
}
#: Echoed when a string or number; any other value is allowed and echoed null.
REQUEST_ID: Schema = {}
#: A record as it is stored: what jobstatus writes always has ``job_id`` and
#: ``job_status``; a Toolkit job file, written by another program, may lack
#: either and is answered as it is.
#: ``job_status`` as stored: a string for what jobstatus writes, any JSON
#: value in a Toolkit job file another program wrote. Declared, so that a
#: client generated from the document has the field.
STATUS: Schema = {"description": "The job's status (a string for jobs recorded here)"}
RECORD: Schema = {
    "type": "object",
    "properties": {"job_id": {"type": "string"}, "job_status": STATUS},
}
TOMBSTONE: Schema = {
    "type": "object",
    "required": ["job_id", "job_status", "expired_at"],
    "properties": {
        "job_id": {"type": "string"},
        "job_status": STATUS,
        "expired_at": {"type": "number"},
    },
}
#: A job's place in the change order: a feed's ``job`` event.
CHANGE: Schema = {
    "type": "object",
    "required": ["job_id", "job_status", "updated_at", "version"],
    "properties": {
        "job_id": {"type": "string"},
        "job_status": STATUS,
        "updated_at": {"type": "number"},
        "version": {"type": "string"},
    },
}
#: A list's item: the change, and its record with ``include=record``.
ITEM: Schema = {
    **CHANGE,
    "properties": {**CHANGE["properties"], "record": RECORD},
}
STATE: Schema = {
    "type": "object",
    "required": ["job_status", "updated_at", "version"],
    "properties": {
        "job_status": STATUS,
        "updated_at": {"type": "number"},
        "version": {"type": "string"},
    },
}
UNTIL: Schema = {"type": "string", "enum": ["finished", "changed"]}

TOOLKIT_JOB_BODY: Schema = {
    "type": "object",
    "required": ["job_id"],
    "properties": {"job_id": JOB_ID, "id": REQUEST_ID},
}
TOOLKIT_JOBS_BODY: Schema = {
    "type": "object",
    "properties": {
        "since_seconds": {"type": ["number", "null"], "minimum": 0},
        "id": REQUEST_ID,
    },
}
BATCH_BODY: Schema = {
    "type": "object",
    "required": ["job_ids"],
    "properties": {"job_ids": JOB_IDS, "id": REQUEST_ID},
}
WAIT_BODY: Schema = {
    "type": "object",
    "required": ["job_ids"],
    "properties": {
        "job_ids": JOB_IDS,
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_WAIT},
        "until": UNTIL,
        "after": {"type": ["string", "null"]},
        "id": REQUEST_ID,
    },
}
TOKEN_BODY: Schema = {
    "type": "object",
    "properties": {
        "job_ids": JOB_IDS,
        "all": {"type": ["boolean", "null"]},
        "ttl_seconds": {
            "type": ["number", "null"],
            "exclusiveMinimum": 0,
            "maximum": MAX_TTL_SECONDS,
        },
        "id": REQUEST_ID,
    },
    # job_ids, or all: true — never both.
    "oneOf": [
        {
            "required": ["all"],
            "properties": {"all": {"const": True}},
            "not": {"required": ["job_ids"]},
        },
        {"required": ["job_ids"], "properties": {"all": {"enum": [False, None]}}},
    ],
}

TOOLKIT_LISTING: Schema = {
    "type": "object",
    "additionalProperties": True,
}
PAGE: Schema = {
    "type": "object",
    "required": ["jobs", "cursor", "has_more"],
    "properties": {
        "jobs": {"type": "array", "items": ITEM},
        "cursor": {"type": "string"},
        "has_more": {"type": "boolean"},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
}
BATCH: Schema = {
    "type": "object",
    "required": ["jobs", "expired", "unknown"],
    "properties": {
        "jobs": {"type": "object", "additionalProperties": RECORD},
        "expired": {"type": "object", "additionalProperties": TOMBSTONE},
        "unknown": {"type": "array", "items": {"type": "string"}},
    },
}
WAITED: Schema = {
    "type": "object",
    "required": ["jobs", "expired", "pending", "timed_out", "cursor"],
    "properties": {
        "jobs": {"type": "object", "additionalProperties": STATE},
        "expired": {"type": "object", "additionalProperties": TOMBSTONE},
        "pending": {"type": "array", "items": {"type": "string"}},
        "timed_out": {"type": "boolean"},
        "cursor": {"type": "string"},
    },
}
TOKEN: Schema = {
    "type": "object",
    "required": ["token", "expires_at"],
    "properties": {"token": {"type": "string"}, "expires_at": {"type": "number"}},
}
HEALTH: Schema = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string"}},
}
