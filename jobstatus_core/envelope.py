"""The JSON envelope every answer is wrapped in."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from . import jsontext
from .types import RequestId


@dataclass(frozen=True)
class Host:
    """Envelope fields the host supplies: who is serving."""

    pid: int
    build_number: str
    #: Default (None): the pid, an integer fixed for the life of the process.
    queue_id: int | str | None = None
    queue_length: Callable[[], int] = lambda: 0

    @cached_property
    def texts(self) -> tuple[str, str]:
        """The envelope's fields fixed for the process, as JSON text: the
        ``pid`` and ``queue_id`` members, and ``build_number``'s."""
        queue_id = self.pid if self.queue_id is None else self.queue_id
        return (
            f',"pid":{jsontext.scalar(self.pid)},"queue_id":{jsontext.scalar(queue_id)}',
            f',"build_number":{jsontext.scalar(self.build_number)}',
        )


def envelope(
    *,
    host: Host,
    endpoint: str,
    code: int,
    request_id: RequestId,
    job_id: str,
    response_json: str,
    message: str,
    elapsed: float,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The envelope as JSON text, ``response_json`` (already JSON) inside.

    Byte for byte what ``jsontext.encode`` makes of the envelope as an
    object, keys in this order (``error`` after ``build_number`` when the
    code is not 200, then ``extra``'s). Written out field by field because
    encoding the object whole cost ~3 µs of a status poll's ~70, and a
    store that keeps its records as JSON text hands them over unparsed.
    """
    # Most answers take well under the 0.5 ms that rounds to 0.001.
    elapsed_text = (
        "0.0" if 0.0 < elapsed < 0.0004 else jsontext.scalar(round(elapsed, 3))
    )
    ids, build_number = host.texts
    text = (
        f'{{"endpoint":{jsontext.string(endpoint)},"code":{code},'
        f'"id":{jsontext.scalar(request_id)},"job_id":{jsontext.string(job_id)},'
        f'"response":{response_json},"message":{jsontext.string(message)}{ids},'
        f'"run_time":{elapsed_text},"queue_time":0,"total_time":{elapsed_text},'
        f'"queue_length":{jsontext.scalar(host.queue_length())}{build_number}'
    )
    if code != 200:
        text += f',"error":{jsontext.string(message)}'
    if extra:
        text += "".join(
            f",{jsontext.string(key)}:{jsontext.encode(value)}"
            for key, value in extra.items()
        )
    return text + "}"
