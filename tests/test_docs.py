"""The code and shell examples of README.md and docs/, run so they cannot rot."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobstatus_backends.sqlite import SQLiteStore

from .helpers import free_port, wait_for

pytestmark = pytest.mark.sqlite  # the quick start runs on the default store

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent


def blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), re.S)


def shell(
    line: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", line],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def quick_start_server(tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """The README's first command, minus the install: the package is installed."""
    (first,) = blocks(ROOT / "README.md", "sh")[:1]
    assert first.strip() == (
        "python3 -m pip install '.[fast]' && API_KEY=demo-key jobstatus serve"
    )
    port = free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for name in ("JOBSTATUS_STORE", "LOCAL_STORAGE_PATH", "JOBSTATUS_API_KEYS"):
        env.pop(name, None)
    server = subprocess.Popen(
        ["bash", "-c", f"API_KEY=demo-key exec jobstatus serve --port {port}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: shell(f"curl -s 127.0.0.1:{port}", tmp_path, env).stdout != "", 20)
    yield port, env
    server.terminate()
    server.wait(20)


def runnable_lines(path: Path) -> list[str]:
    """Lines a reader copies into a second shell: jobstatus commands and curl."""
    lines = []
    for block in blocks(path, "sh"):
        for line in block.strip().splitlines():
            if line.startswith(
                ("curl ", "jobstatus record", "jobstatus get", "jobstatus list")
            ):
                lines.append(line)
    return lines


@pytest.mark.parametrize("doc", ["README.md", "docs/getting-started.md", "docs/api.md"])
def test_shell_examples_work_against_the_quick_start_server(
    doc: str, quick_start_server: tuple[int, dict[str, str]], tmp_path: Path
) -> None:
    port, env = quick_start_server
    lines = runnable_lines(ROOT / doc)
    assert any(line.startswith("curl") for line in lines)
    codes = []
    for line in lines:
        result = shell(
            line.replace("127.0.0.1:8080", f"127.0.0.1:{port}"), tmp_path, env
        )
        if "/events" in line:
            # A stream: curl's --max-time ends it (exit 28); what came is
            # server-sent events, the first of them a job.
            assert result.returncode == 28, (line, result.stderr)
            assert "event: job" in result.stdout and "id: " in result.stdout
            continue
        assert result.returncode == 0, (line, result.stderr)
        if line.startswith("curl"):
            body = json.loads(result.stdout)
            codes.append(body["code"])
            assert body["code"] != 400 or "../etc/passwd" in line
    assert 200 in codes


def test_readme_test_command_is_what_ci_runs() -> None:
    second = blocks(ROOT / "README.md", "sh")[1].strip()
    assert second == "python3 -m pip install tox tox-uv && python3 -m tox"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install --quiet --disable-pip-version-check tox tox-uv" in ci
    assert "python3 -m tox" in ci


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_python_examples_parse(doc: Path) -> None:
    for block in blocks(doc, "python"):
        ast.parse(textwrap.dedent(block))  # blocks inside list items are indented


def test_embedding_hosts_are_the_tested_examples() -> None:
    # Whole files, so that what a reader copies is what a real server runs.
    # The job-queue examples (docs/queues.md) are run by their own tests.
    hosts_only = ("flask", "django", "starlette", "fastapi")
    examples = {
        p.read_text()
        for p in (ROOT / "examples").glob("*.py")
        if p.stem.removesuffix("_app") in hosts_only
    }
    hosts = blocks(ROOT / "docs" / "embedding.md", "python")[2:]
    assert len(hosts) == len(examples) == 4
    assert set(hosts) == examples


@pytest.mark.parametrize("index", [0, 1], ids=["knobs", "recording"])
def test_embedding_snippets_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: int
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(blocks(ROOT / "docs" / "embedding.md", "python")[index], namespace)
    if index == 0:
        service = namespace["service"]
        assert service.host.queue_id == "workers-eu-1"  # type: ignore[attr-defined]
        service.store.close()  # type: ignore[attr-defined]
    else:
        store = SQLiteStore(tmp_path / "jobs.db")
        assert store.get("render-7")["response"] == {  # type: ignore[index]
            "file_url": "https://example.com/render-7.mp4"
        }
        store.close()


def test_configuration_error_examples_are_what_the_command_prints(
    tmp_path: Path,
) -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    documented = [
        line for line in text.splitlines() if line.startswith("jobstatus: error:")
    ]
    cases = [
        {"JOBSTATUS_MAX_BODY": "64k"},
        {"JOBSTATUS_STORE": "ftp://x"},
        {"LOCAL_STORAGE_PATH": "/srv/nope"},
        {"JOBSTATUS_STORE": "sqlite:jobs.db?journal=wal"},
        {"API_KEY": "clé"},
    ]
    assert len(documented) == len(cases)
    for line, extra in zip(documented, cases, strict=True):
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("JOBSTATUS_")
            and k not in ("API_KEY", "LOCAL_STORAGE_PATH")
        }
        result = subprocess.run(
            [sys.executable, "-m", "jobstatus_adapters.cli", "list"],
            cwd=tmp_path,
            env={**env, **extra},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2
        assert result.stderr.strip() == line


def writing_a_store_block(needle: str) -> str:
    (block,) = [
        block
        for block in blocks(ROOT / "docs" / "writing-a-store.md", "python")
        if needle in block
    ]
    return block


def test_writing_a_store_kit_snippet_passes_on_the_dbm_store(tmp_path: Path) -> None:
    """The page's pytest module, unchanged, run as a third party would: its
    ``mystore`` module is the example dbm store."""
    from jobstatus_backends.conformance import StoreConformance

    (tmp_path / "mystore.py").write_text(
        "from tests.plugin_store import DbmStore as MyStore\n"
    )
    (tmp_path / "test_mystore.py").write_text(writing_a_store_block("StoreConformance"))
    result = subprocess.run(
        [sys.executable, "-W", "error", "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    promises = [name for name in dir(StoreConformance) if name.startswith("test_")]
    assert f"{len(promises)} passed" in result.stdout


def test_writing_a_store_wrapper_snippet_keeps_capabilities() -> None:
    from jobstatus_core import Enumerable, Inline

    namespace: dict[str, Any] = {}
    exec(writing_a_store_block("StoreWrapper"), namespace)
    store = namespace["store"]
    assert store.read("nope") is None and store.reads == 1
    assert isinstance(store, Inline) and isinstance(store, Enumerable)
    store.close()
