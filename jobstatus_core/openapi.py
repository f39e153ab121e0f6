"""The OpenAPI 3.1 document, generated from the contract table.

Nothing here lists an endpoint: every path, parameter, body and answer comes
from an ``Operation`` row, so the document cannot drift from the routing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from .schemas import CHANGE, TOMBSTONE, Schema, Setting

if TYPE_CHECKING:
    from .contract import Operation
    from .requests import Request
    from .service import Reply, StatusService

OPENAPI_VERSION = "3.1.0"

#: The envelope of SPEC §3, around every JSON answer.
_ENVELOPE_FIELDS: Schema = {
    "endpoint": {"type": "string"},
    "code": {"type": "integer"},
    "id": {"type": ["string", "number", "null"]},
    "job_id": {"type": "string"},
    "message": {"type": "string"},
    "pid": {"type": "integer"},
    "queue_id": {"type": ["integer", "string"]},
    "queue_length": {"type": "integer"},
    "run_time": {"type": "number"},
    "queue_time": {"type": "number"},
    "total_time": {"type": "number"},
    "build_number": {"type": "string"},
    "error": {"type": "string"},
    "waited": {
        "type": "object",
        "required": ["seconds", "met"],
        "properties": {"seconds": {"type": "number"}, "met": {"type": "boolean"}},
    },
}
_REQUIRED = [
    "endpoint",
    "code",
    "id",
    "job_id",
    "response",
    "message",
    "pid",
    "queue_id",
    "queue_length",
    "run_time",
    "queue_time",
    "total_time",
    "build_number",
]

SECURITY_SCHEMES: Schema = {
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    "bearerToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A scoped read token from POST /v1/tokens",
    },
    "queryToken": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "A scoped read token, for clients that cannot set headers",
    },
}


def document(
    operations: Sequence[Operation],
    *,
    prefix: str = "",
    version: str,
    settings: Mapping[str, Any],
    open_operations: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations`` mounted under ``prefix``;
    ``settings`` give the bounds that are settings (``max_wait``)."""
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        item = _operation(operation, open_operations)
        paths.setdefault(prefix + operation.path, {})[operation.method.lower()] = item
    resolved: dict[str, Any] = _resolved(
        {
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": "jobstatus",
                "version": version,
                "description": "Job statuses over HTTP: the Toolkit API's two"
                " endpoints and the jobstatus API.",
            },
            "paths": paths,
            "components": {
                "schemas": {
                    "Envelope": _envelope({}),
                    "ErrorEnvelope": {
                        **_envelope({"type": "null"}),
                        "required": [*_REQUIRED, "error"],
                    },
                },
                "securitySchemes": SECURITY_SCHEMES,
            },
        },
        settings,
    )
    return resolved


def serve(
    service: StatusService, request: Request, operations: Sequence[Operation]
) -> Reply:
    """``GET /v1/openapi.json``: the document itself, not in the envelope
    (tools read it as is), for the prefix the request came through."""
    from .contract import normalized_prefix
    from .service import Reply

    own = next(op for op in operations if op.name == "openapi")
    prefix = normalized_prefix(request.endpoint[: -len(own.path)])
    body = service_document(service, operations, prefix)
    text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    return Reply(200, (("content-type", "application/json"),), text.encode())


def service_document(
    service: StatusService, operations: Sequence[Operation], prefix: str = ""
) -> dict[str, Any]:
    """The document of ``service`` mounted under ``prefix``: what a host
    merges into its own (docs/embedding.md). Without an exposition (routes
    mounted alone, ``status_routes``) ``/metrics`` answers 404: not listed."""
    from . import __version__

    if service.exposition is None:
        operations = [op for op in operations if op.name != "metrics"]
    return document(
        operations,
        prefix=prefix,
        version=__version__,
        settings={"max_wait": service.max_wait},
        open_operations=service.open_operations,
    )


def _operation(operation: Operation, open_operations: frozenset[str]) -> Schema:
    item: Schema = {
        "operationId": operation.name,
        "summary": operation.summary,
        "responses": _responses(operation, open_operations),
    }
    parameters = [
        {
            "name": param.name,
            "in": param.where,
            "description": param.description,
            "required": param.required or param.where == "path",
            "schema": param.schema,
            **(
                {"style": "form", "explode": True}
                if param.schema.get("type") == "array"
                else {}
            ),
        }
        for param in operation.params
    ]
    if parameters:
        item["parameters"] = parameters
    if operation.reads_body:
        item["requestBody"] = {
            "required": not operation.body_optional,
            "content": {"application/json": {"schema": operation.body or {}}},
        }
    if not _authenticated(operation, open_operations):
        item["security"] = []
    elif operation.tokens:
        item["security"] = [{"apiKey": []}, {"bearerToken": []}, {"queryToken": []}]
    else:
        item["security"] = [{"apiKey": []}]
    return item


def _responses(operation: Operation, open_operations: frozenset[str]) -> Schema:
    if operation.name == "openapi":
        ok: Schema = {
            "type": "object",
            "required": ["openapi", "paths"],
            "properties": {"openapi": {"type": "string"}, "paths": {"type": "object"}},
        }
    elif operation.media_type == "text/event-stream":
        # One event, as OpenAPI 3.2's itemSchema says it and as tools for
        # 3.1 (schemathesis) read ``schema`` for this media type: its fields,
        # ``data`` the JSON of SPEC §11.
        ok = EVENT
    elif operation.media_type != "application/json":
        ok = {"type": "string"}  # Prometheus' exposition, as it is
    else:
        ok = _envelope(operation.response or {})
    media = operation.media_type.split(";", 1)[0]
    responses: Schema = {
        "200": {"description": "success", "content": {media: {"schema": ok}}}
    }
    codes = set(operation.answers)
    if 304 in codes:
        # What a client sends back in If-None-Match, and when it changed.
        responses["200"]["headers"] = VERSION_HEADERS
    if _authenticated(operation, open_operations):
        codes.add(401)
    if operation.reads_store:
        codes.update((500, 503))
    for code in sorted(codes):
        if code in BODILESS:
            responses[str(code)] = {"description": BODILESS[code]}
            if code == 304:
                responses["304"]["headers"] = VERSION_HEADERS
            continue
        headers: Schema = {}
        if code == 405:
            headers["allow"] = {"schema": {"type": "string"}}
        if code == 503:
            headers["retry-after"] = {"schema": {"type": "string"}}
        error: Schema = {"$ref": "#/components/schemas/ErrorEnvelope"}
        description = HTTPStatus(code).phrase
        if code == 410 and operation.gone is not None:
            # Job expired: the envelope's response is the tombstone.
            error = {**_envelope(operation.gone), "required": [*_REQUIRED, "error"]}
            description += ": Job expired, the response is its tombstone"
        responses[str(code)] = {
            "description": description,
            "content": {"application/json": {"schema": error}},
            **({"headers": headers} if headers else {}),
        }
    return responses


#: A job's version as HTTP says it (SPEC §8, §9).
VERSION_HEADERS: Schema = {
    "etag": {"schema": {"type": "string"}, "description": "The job's version, quoted"},
    "last-modified": {
        "schema": {"type": "string"},
        "description": "When the job was last written, as an HTTP date",
    },
}

#: The answers without a body, and what each says.
BODILESS = {
    204: "No Content: the job's stream ended; a browser stops reconnecting",
    304: "Not Modified: the ETag is current",
}


#: One server-sent event of the feeds (SPEC §11).
EVENT: Schema = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["job", "expired"]},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"oneOf": [CHANGE, TOMBSTONE]},
        },
    },
}


def _authenticated(operation: Operation, open_operations: frozenset[str]) -> bool:
    return operation.authenticated and operation.name not in open_operations


def _envelope(response: Schema) -> Schema:
    return {
        "type": "object",
        "required": _REQUIRED,
        "properties": {**_ENVELOPE_FIELDS, "response": response},
    }


def _resolved(value: Any, settings: Mapping[str, Any]) -> Any:
    """A copy of ``value`` with each ``Setting`` replaced by its value."""
    if isinstance(value, Setting):
        return settings[value.name]
    if isinstance(value, dict):
        return {key: _resolved(item, settings) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_resolved(item, settings) for item in value]
    return value
