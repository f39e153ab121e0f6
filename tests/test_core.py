"""The pure core: its imports, validation rules, settings and registry."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jobstatus_core
from jobstatus_core import (
    ApiKeyAuth,
    ConfigError,
    Host,
    Mark,
    Query,
    Registry,
    Row,
    Settings,
    StatusService,
    StoreBase,
    StoreError,
    Window,
    jsontext,
)
from jobstatus_core.envelope import envelope
from jobstatus_core.errors import one_line_reason
from jobstatus_core.problems import ApiError
from jobstatus_core.registry import redact
from jobstatus_core.validation import (
    content_length,
    is_json_media_type,
    is_valid_job_id,
    parse_body,
    since_seconds_of,
)
from jobstatus_core.window import cutoff, in_window

FORBIDDEN = (
    "starlette",
    "uvicorn",
    "sqlite3",
    "sqlite_utils",
    "watchdog",
    "redis",
    "httpx",
    "anyio",
    "jobstatus_backends",
    "jobstatus_adapters",
    "backends",
    "adapters",
)


def test_importing_the_core_imports_no_io_or_framework() -> None:
    code = "import sys, json, jobstatus_core; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    assert not loaded & set(FORBIDDEN), loaded & set(FORBIDDEN)


ALLOWED_STDLIB = {
    # the language
    "__future__",
    "collections",
    "dataclasses",
    "typing",
    # text, numbers and ordered lists
    "json",
    "math",
    "re",
    "posixpath",
    "bisect",
    "heapq",
    # signed cursors and API keys
    "base64",
    "binascii",
    "hashlib",
    "hmac",
    # HTTP dates of a time passed in; status phrases of the OpenAPI document
    "email.utils",
    "http",
    "logging",
    # locks around the kept listings; the core starts no thread (below)
    "threading",
    # a read asked not to wait (nowait.attempt): per task, not per thread
    "contextvars",
    # a small cache of a pure function (the filter digest of cursors)
    "functools",
    "types",
}

#: What the core may take from ``threading``: locks, not threads or timers.
THREADING_USES = {"Lock", "RLock"}


def core_imports() -> Iterator[tuple[str, ast.AST]]:
    for path in Path(jobstatus_core.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            yield path.name, node


def test_core_modules_import_only_pure_stdlib() -> None:
    """No clock, file, id or process calls: time, ids and pid are passed in."""
    for name, node in core_imports():
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules = [node.module or ""]
        else:
            continue
        for module in modules:
            assert module in ALLOWED_STDLIB or module.split(".")[0] in (
                ALLOWED_STDLIB - {"email.utils"}
            ), f"{name} imports {module}"


def test_core_takes_only_locks_from_threading_and_no_clock_from_dates() -> None:
    for name, node in core_imports():
        if isinstance(node, ast.ImportFrom) and node.module == "threading":
            used = {alias.name for alias in node.names}
            assert used <= THREADING_USES, f"{name} imports {used} from threading"
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "threading"
        ):
            assert node.attr in THREADING_USES, f"{name} uses threading.{node.attr}"
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "formatdate"
        ):
            # formatdate() without a time reads the clock.
            assert node.args, f"{name} calls formatdate() without a time"


def test_all_is_what_the_package_exports() -> None:
    """Every name imported into the package is in ``__all__``, and back;
    submodules are not, but for ``jsontext``, exported as a module."""
    public = {
        name
        for name, value in vars(jobstatus_core).items()
        if not name.startswith("_")
        and name != "annotations"
        and (not isinstance(value, ModuleType) or name == "jsontext")
    }
    assert set(jobstatus_core.__all__) - {"__version__"} == public


@pytest.mark.parametrize(
    "job_id, valid",
    [
        ("a", True),
        ("A.b-c_d", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        (".a", False),
        ("a/b", False),
        ("é", False),
        ("a\n", False),
        ("٣", False),
        (None, False),
        (5, False),
    ],
)
def test_job_id_rule(job_id: object, valid: bool) -> None:
    assert is_valid_job_id(job_id) is valid


@pytest.mark.parametrize(
    "value, ok",
    [
        ("application/json", True),
        ("application/json;charset=utf-8", True),
        ("APPLICATION/JSON", True),
        ("application/ld+json", True),
        ("text/json", False),
        ("application/jsonx", False),
        ("/+json", False),
        ("text/plain", False),
    ],
)
def test_json_media_types(value: str, ok: bool) -> None:
    assert is_json_media_type(value) is ok


def test_parse_body_depth_and_encoding() -> None:
    assert parse_body(b"") == {}
    assert parse_body(b' {"a": 1} ') == {"a": 1}
    # Duplicate keys: the last one wins, as in every Python JSON parser.
    assert parse_body(b'{"a": 1, "a": 2}') == {"a": 2}
    with pytest.raises(ApiError, match="nested too deep"):
        parse_body(b"[" * 100_000)
    with pytest.raises(ApiError, match="not UTF-8"):
        parse_body('{"a": "é"}'.encode("latin-1"))


def test_since_seconds_default_and_int_overflow() -> None:
    assert since_seconds_of({}, 600.0) == 600.0
    assert since_seconds_of({"since_seconds": 0}, 600.0) == 0.0
    with pytest.raises(ApiError, match="finite"):
        since_seconds_of({"since_seconds": 10**400}, 600.0)


def test_window_is_inclusive() -> None:
    assert cutoff(1000.0, 600.0) == 400.0
    assert in_window(400.0, 400.0) and not in_window(399.9, 400.0)


def test_api_key_auth() -> None:
    auth = ApiKeyAuth(["k1", "k2"])
    assert auth({"x-api-key": "k1"}) and auth({"x-api-key": "k2"})
    assert (
        not auth({})
        and not auth({"x-api-key": "k3"})
        and not auth({"x-api-key": "k1 "})
    )
    assert not auth({"x-api-key": "k\udcff"})
    assert "k1" not in repr(auth)
    with pytest.raises(ConfigError):
        ApiKeyAuth([])
    with pytest.raises(ConfigError):
        ApiKeyAuth([""])


def test_settings_defaults() -> None:
    settings = Settings.from_environ({}, cwd="/srv/app")
    assert settings.store_url == "sqlite:///srv/app/jobstatus.db"
    assert settings.api_keys == ()
    assert settings.default_since == 600.0
    assert settings.max_body == 65536
    assert settings.build_number is None


def test_settings_from_environment() -> None:
    settings = Settings.from_environ(
        {
            "LOCAL_STORAGE_PATH": "storage",
            "API_KEY": "a",
            "JOBSTATUS_API_KEYS": "b, a,,c",
            "JOBSTATUS_DEFAULT_SINCE": "30.5",
            "JOBSTATUS_MAX_BODY": "1024",
            "BUILD_NUMBER": "77",
        },
        cwd="/srv/app",
    )
    assert settings.store_url == "file:///srv/app/storage"
    assert settings.api_keys == ("a", "b", "c")
    assert settings.default_since == 30.5
    assert settings.max_body == 1024
    assert settings.build_number == "77"
    explicit = Settings.from_environ(
        {"JOBSTATUS_STORE": "memory://", "LOCAL_STORAGE_PATH": "/x"}, cwd="/"
    )
    assert explicit.store_url == "memory://"


@pytest.mark.parametrize(
    "name, value",
    [
        ("JOBSTATUS_DEFAULT_SINCE", "ten"),
        ("JOBSTATUS_DEFAULT_SINCE", "-1"),
        ("JOBSTATUS_DEFAULT_SINCE", "nan"),
        ("JOBSTATUS_MAX_BODY", "64k"),
        ("JOBSTATUS_MAX_BODY", "0"),
        ("API_KEY", " "),
        ("JOBSTATUS_API_KEYS", " , "),
    ],
)
def test_bad_setting_names_itself(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_environ({name: value}, cwd="/")
    assert str(info.value).startswith(name + ":")
    assert "\n" not in str(info.value)


class ToyStore(StoreBase):
    """A third-party store, registered by scheme: empty, and v2 in shape."""

    def __init__(self, url: str) -> None:
        self.url = url

    def read(self, job_id: str) -> Row | None:
        return None

    def window(self, cutoff: float) -> Window:
        return Window([], None)

    def page(self, query: Query) -> list[Row]:
        return []

    def counts(
        self, statuses: frozenset[str] | None, cutoff: float | None
    ) -> dict[str, int]:
        return {}

    def mark(self) -> Mark:
        return Mark("toy", 0)

    def put(self, record: Mapping[str, Any], *, at: float | None = None) -> None:
        pass

    def swap(
        self,
        record: Mapping[str, Any],
        *,
        expected: str | None,
        at: float | None = None,
    ) -> bool:
        return False

    def close(self) -> None:
        pass


def test_registry_opens_registered_schemes_only() -> None:
    registry = Registry()
    registry.register("toy", ToyStore)
    store = registry.open("TOY://anything")
    assert isinstance(store, ToyStore) and store.url == "TOY://anything"
    assert isinstance(store, jobstatus_core.Store)
    assert store.get("x") is None and list(store.changed_since(0)) == []
    with pytest.raises(ConfigError, match=r"known: toy://"):
        registry.open("nope://x")
    with pytest.raises(ConfigError):
        registry.open("/just/a/path")


def test_a_registry_opens_urls_to_record_into_with_their_own_factory() -> None:
    registry = Registry()
    registry.register("toy", ToyStore)
    opened: list[str] = []

    def recording(url: str) -> ToyStore:
        opened.append(url)
        return ToyStore(url)

    registry.register("lean", ToyStore, recording=recording)
    # Without one, recording opens a URL as everything else does.
    assert isinstance(registry.open_for_recording("toy://a"), ToyStore)
    assert opened == []
    registry.open("lean://b")
    assert opened == []
    registry.open_for_recording("LEAN://c")
    assert opened == ["LEAN://c"]
    with pytest.raises(ConfigError, match=r"known: lean://, toy://"):
        registry.open_for_recording("nope://x")


class OldShapedStore:
    """A store of the first protocol: get, changed_since, exists, put, close."""

    def get(self, job_id: str) -> None:
        return None

    def changed_since(self, cutoff: float) -> list[tuple[str, object]]:
        return []

    def exists(self) -> bool:
        return True

    def put(self, record: object, *, at: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_service_refuses_a_store_of_the_old_shape_naming_what_it_lacks() -> None:
    def service(store: object) -> StatusService:
        return StatusService(
            store,  # type: ignore[arg-type]
            auth=None,
            host=Host(pid=1, build_number="1"),
            clock=lambda: 0.0,
            timer=lambda: 0.0,
            new_id=lambda: "r",
        )

    with pytest.raises(ConfigError) as info:
        service(OldShapedStore())
    assert str(info.value) == (
        "OldShapedStore is not a store: it lacks counts, mark, page, read, "
        "read_many, swap, window"
    )
    assert service(ToyStore("toy://")).store is not None


def test_redact_hides_passwords() -> None:
    assert redact("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact("sqlite:///a/b.db") == "sqlite:///a/b.db"
    assert "secret" not in str(_config_error_for("redis://:secret@h/0"))


def _config_error_for(url: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        Registry().open(url)
    return info.value


def test_one_line_reason_hides_paths_and_tracebacks() -> None:
    assert (
        one_line_reason(FileNotFoundError(2, "No such file or directory", "/etc/x"))
        == "No such file or directory"
    )
    assert one_line_reason(ValueError("/secret/path")) == "ValueError"


def refuse_constant(token: str) -> object:
    raise AssertionError(f"{token} is not JSON")


def test_jsontext_writes_non_finite_numbers_as_null() -> None:
    nan, inf = float("nan"), float("inf")
    record = {"job_id": "j", "job_status": nan, "response": {"v": [inf, -inf, 1.5]}}
    text = jsontext.encode(record)
    assert text == '{"job_id":"j","job_status":null,"response":{"v":[null,null,1.5]}}'
    assert jsontext.encode({nan: 1, inf: 2}) == '{"NaN":1,"Infinity":2}'
    assert jsontext.member("j", nan) == '"j":null'
    json.loads(text, parse_constant=refuse_constant)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"a":"done"}', '{"a":"done"}'),
        ("{}", "{}"),
        # Valid, but not what jsontext writes: written again, ASCII and strict.
        ('{"a":"fertig \u2713"}', r'{"a":"fertig \u2713"}'),
        ('{"a":"\ud800"}', r'{"a":"\ud800"}'),
        ('{"a":NaN,"b":-Infinity}', '{"a":null,"b":null}'),
        ('{"NaN-job":"done"}', '{"NaN-job":"done"}'),
    ],
)
def test_checked_object_passes_or_rewrites_store_text(text: str, expected: str) -> None:
    checked = jsontext.checked_object(text)
    assert checked == expected
    json.loads(checked, parse_constant=refuse_constant)


@pytest.mark.parametrize(
    "text",
    ['{"a":', "", '{"a":done}', "[1]", "[NaN]", "{'a': 'done'}", '{"a":NaN', "{\x01}"],
)
def test_checked_object_refuses_what_does_not_parse(text: str) -> None:
    with pytest.raises(StoreError, match="listing is not"):
        jsontext.checked_object(text)


@pytest.mark.parametrize(
    "value", ["\u00b2", "\u0663", "\uff11", "+1", "1_0", "0x10", "-1", "1.0"]
)
def test_content_length_is_ascii_digits(value: str) -> None:
    with pytest.raises(ApiError, match="Invalid Content-Length") as info:
        content_length({"content-length": value})
    assert info.value.status == 400


def test_content_length_absent_or_digits() -> None:
    assert content_length({}) is None
    assert content_length({"content-length": "0"}) == 0
    assert content_length({"content-length": "65536"}) == 65536


@pytest.mark.parametrize(
    "name, value",
    [
        ("JOBSTATUS_MAX_WAIT", "0"),
        ("JOBSTATUS_MAX_WAIT", "1e10"),  # past what a thread's wait can time
        ("JOBSTATUS_MAX_WAIT", "soon"),
        ("JOBSTATUS_MAX_WAITERS", "0"),
        ("JOBSTATUS_MAX_STREAMS", "1.5"),
        ("JOBSTATUS_TERMINAL", " , "),
        ("JOBSTATUS_STREAM_SECONDS", "-1"),
    ],
)
def test_live_settings_are_checked_at_start(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_environ({name: value}, cwd="/")
    assert str(info.value).startswith(name + ":")
    if name != "JOBSTATUS_TERMINAL":
        # The text as given, as every setting's error quotes it (not "0.0").
        assert str(info.value).endswith(f"got {value!r}")


def test_live_settings_are_read() -> None:
    settings = Settings.from_environ(
        {
            "JOBSTATUS_MAX_WAIT": "5",
            "JOBSTATUS_MAX_WAITERS": "7",
            "JOBSTATUS_MAX_STREAMS": "9",
            "JOBSTATUS_TERMINAL": "done, archived",
            "JOBSTATUS_TOKEN_SECRET": "s3cret",
        },
        cwd="/",
    )
    assert (settings.max_wait, settings.max_waiters, settings.max_streams) == (5, 7, 9)
    assert settings.terminal == ("done", "archived")
    assert settings.token_secret == "s3cret"


def test_the_router_finds_a_path_of_the_table_under_its_prefix() -> None:
    from jobstatus_core.contract import Match, Router

    router = Router(prefix="/api")
    assert router.find("/api/v1/job/abc") == ("/v1/job/{job_id}", {"job_id": "abc"})
    assert router.find("/v1/job/abc") is None  # outside the prefix
    assert router.find("/api/v1/job/a/b") is None  # a parameter holds no slash
    found = router.match("GET", "/api/v1/job/abc")
    assert isinstance(found, Match) and found.operation.path == "/v1/job/{job_id}"
    assert router.match("DELETE", "/api/v1/job/abc") == tuple(
        router.methods["/v1/job/{job_id}"]
    )


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    endpoint=st.text(),
    code=st.sampled_from([200, 400, 404, 410, 500]),
    request_id=st.none() | st.text() | st.integers() | st.floats(allow_nan=False),
    job_id=st.text(),
    response=JSON_VALUES,
    message=st.text(),
    # The second: around the 0.5 ms that rounds to 0.001, written apart.
    elapsed=st.floats(min_value=0, max_value=1e6)
    | st.floats(min_value=0, max_value=0.002),
    queue_id=st.none() | st.integers(min_value=0) | st.text(),
    queue_length=st.integers(min_value=0),
    build_number=st.text(),
    extra=st.none()
    | st.dictionaries(st.text(max_size=5).map("x-".__add__), JSON_VALUES, max_size=2),
)
def test_envelope_text_is_the_encoded_envelope_object(
    endpoint: str,
    code: int,
    request_id: Any,
    job_id: str,
    response: Any,
    message: str,
    elapsed: float,
    queue_id: Any,
    queue_length: int,
    build_number: str,
    extra: dict[str, Any] | None,
) -> None:
    """Built field by field, byte for byte what encoding the object whole
    makes of it (the envelope of every answer, Part I's included)."""
    host = Host(4242, build_number, queue_id, lambda: queue_length)
    text = envelope(
        host=host,
        endpoint=endpoint,
        code=code,
        request_id=request_id,
        job_id=job_id,
        response_json=jsontext.encode(response),
        message=message,
        elapsed=elapsed,
        extra=extra,
    )
    whole: dict[str, Any] = {
        "endpoint": endpoint,
        "code": code,
        "id": request_id,
        "job_id": job_id,
        "response": response,
        "message": message,
        "pid": 4242,
        "queue_id": 4242 if queue_id is None else queue_id,
        "run_time": round(elapsed, 3),
        "queue_time": 0,
        "total_time": round(elapsed, 3),
        "queue_length": queue_length,
        "build_number": build_number,
    }
    if code != 200:
        whole["error"] = message
    # Extra keys (endpoints add only new ones) come after the envelope's own.
    whole.update(extra or {})
    assert text == jsontext.encode(whole)
    assert text.isascii()


FINITE_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(value=FINITE_JSON_VALUES)
def test_encode_is_the_standard_encoders_compact_ascii_text(value: Any) -> None:
    """``encode`` runs the standard C encoder, made once: byte for byte what
    ``json.dumps`` writes, compact and in ASCII (lone surrogates too)."""
    assert jsontext.encode(value) == json.dumps(value, separators=(",", ":"))


def test_a_request_parses_its_body_once() -> None:
    from jobstatus_core.requests import Request

    request = Request("/v1/toolkit/job/status", "POST", {}, b'{"job_id": "a"}')
    assert request.payload() == {"job_id": "a"}
    # A handler tried on the loop runs again after its store's round trip:
    # the same parse, not a second one.
    assert request.payload() is request.payload()
    bad = Request("/v1/toolkit/job/status", "POST", {}, b"{")
    for _ in range(2):
        with pytest.raises(ApiError, match="Invalid JSON"):
            bad.payload()
