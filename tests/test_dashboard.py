"""The dashboard in a real browser: headless Chromium (Debian's, through
Playwright) against a real ``jobstatus serve`` on an SQLite file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from jobstatus import Recorder
from jobstatus_adapters.dashboard import CONTENT_SECURITY_POLICY, dashboard_routes
from jobstatus_adapters.service import make_service
from jobstatus_adapters.starlette import create_app, status_routes
from jobstatus_backends import store_from_url
from jobstatus_core import Store

from .helpers import clean_env, free_port, wait_for

pytestmark = pytest.mark.dashboard

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

KEY = "dashboard-key-0123456789"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVE = [sys.executable, "-m", "jobstatus_adapters.cli", "serve"]
AXE = Path(__file__).parent / "axe" / "axe.min.js"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
#: Where the screenshots go; docs/dashboard.png is copied from there by hand.
SHOTS = Path(os.environ.get("DASHBOARD_SCREENSHOTS", "/tmp/jobstatus-dashboard"))
#: A task this long is a freeze (the page stops answering for seconds). A
#: person notices one of a second already, but long tasks are wall-clock
#: times, and on a loaded 2-core CI machine Chromium's stretch out: the
#: measured ones are printed (and written to long-tasks.json) to follow.
FREEZE_MS = 5000
#: How long a change may take to reach the page: a write here, a poll in
#: `jobstatus serve`, the event stream and Chromium drawing, all on a loaded
#: machine. It takes about a second; a change that never reaches the page
#: fails it all the same.
LIVE_MS = 10_000


class Served:
    """``jobstatus serve`` on a port that stays the same across restarts."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (cwd / "serve.log").open("a")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [*SERVE, "--port", str(self.port)],
            cwd=self.cwd,
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )
        wait_for(self._ready, 30)

    def _ready(self) -> bool:
        assert self.process is not None and self.process.poll() is None
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=30)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
        self.log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        message = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_FLAGS
        )
        yield launched
        launched.close()


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def server(tmp_path: Path, database: Path) -> Iterator[Served]:
    served = Served(
        tmp_path, clean_env(API_KEY=KEY, JOBSTATUS_STORE=f"sqlite://{database}")
    )
    yield served
    served.close()


@pytest.fixture
def store(database: Path) -> Iterator[Store]:
    opened = store_from_url(f"sqlite://{database}")
    yield opened
    opened.close()


def signed_in(browser: Any, server: Served, viewport: dict[str, int]) -> Any:
    page = browser.new_page(viewport=viewport)
    page.goto(server.url + "/dashboard/")
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#connection")).to_have_text("Live")
    return page


def row(page: Any, job_id: str) -> Any:
    return page.locator("#rows tr").filter(
        has=page.get_by_role("button", name=job_id, exact=True)
    )


def test_live_list_filters_detail_history_and_reconnect(
    browser: Any, server: Served, store: Store
) -> None:
    recorder = Recorder(store)
    # Two hours old: outside the live window, reached only by paging.
    store.put({"job_id": "oldest-job", "job_status": "done"}, at=time.time() - 7200)
    for n in range(3):
        recorder.queued(f"old-{n}")
        recorder.done(f"old-{n}")
    recorder.queued("broken")
    recorder.failed("broken", RuntimeError("disk full"))

    page = signed_in(browser, server, DESKTOP)
    # The key is not kept: not in the page's storage, not in its address.
    kept = page.evaluate(
        "JSON.stringify([{...sessionStorage}, {...localStorage}, location.href])"
    )
    assert KEY not in kept
    assert page.get_by_label("API key").input_value() == ""
    expect(row(page, "old-0")).to_have_count(1)
    expect(row(page, "oldest-job")).to_have_count(0)

    # A job recorded now appears within a second, without a reload (LIVE_MS
    # on a loaded machine).
    recorder.queued("live-1", task="resize")
    expect(row(page, "live-1")).to_contain_text("queued", timeout=LIVE_MS)
    recorder.running("live-1")
    recorder.progress("live-1", 30, 100, "resizing")
    expect(row(page, "live-1")).to_contain_text("running", timeout=LIVE_MS)

    # The status filter and the id search narrow the list.
    page.get_by_label("Status", exact=True).select_option("failed")
    expect(page.locator("#rows tr")).to_have_count(1)
    expect(row(page, "broken")).to_have_count(1)
    page.get_by_label("Status", exact=True).select_option("")
    page.get_by_label("Job id starts with").fill("old-")
    expect(page.locator("#rows tr")).to_have_count(3)
    page.get_by_label("Job id starts with").fill("")

    # The detail: the record, its progress, and its own live stream.
    page.get_by_role("button", name="live-1", exact=True).click()
    detail = page.locator("#detail")
    expect(detail.get_by_role("heading", name="Job live-1")).to_be_focused()
    expect(page.locator("#progress-label")).to_have_text(
        "Progress: 30 of 100 (30%) — resizing"
    )
    assert page.locator("#progress-bar").evaluate("bar => bar.value") == 30
    expect(page.locator("#detail-record")).to_contain_text('"task": "resize"')
    recorder.progress("live-1", 60, 100, "encoding")
    expect(page.locator("#progress-label")).to_contain_text("60 of 100")
    shoot(page, "desktop")

    # Keyboard: Escape closes the detail and gives focus back to the row.
    page.keyboard.press("Escape")
    expect(detail).to_be_hidden()
    expect(page.get_by_role("button", name="live-1", exact=True)).to_be_focused()

    # Paging through history with the list API's cursor reaches the oldest job.
    page.get_by_role("button", name="Load older jobs").click()
    expect(page.locator("#history")).to_contain_text("All history loaded")
    page.get_by_label("Order", exact=True).select_option("oldest")
    expect(page.locator("#rows tr").first).to_contain_text("oldest-job")
    page.get_by_label("Order", exact=True).select_option("newest")

    # The server restarts: the page reconnects and catches up on what
    # happened while it was away.
    server.stop()
    expect(page.locator("#connection")).not_to_have_text("Live")
    recorder.done("live-1", {"file_url": "https://example.com/out.mp4"})
    recorder.queued("while-down")
    server.start()
    expect(page.locator("#connection")).to_have_text("Live", timeout=15000)
    expect(row(page, "while-down")).to_have_count(1)
    expect(row(page, "live-1")).to_contain_text("done")
    expect(page.locator("#counts")).to_contain_text("done")

    assert_accessible(page)
    page.set_viewport_size(PHONE)
    page.get_by_role("button", name="broken", exact=True).click()
    expect(page.locator("#detail-error")).to_contain_text("RuntimeError: disk full")
    shoot(page, "phone")
    assert_accessible(page)
    page.close()


def test_ten_thousand_jobs_and_a_hundred_changes_a_second(
    browser: Any, server: Served, store: Store
) -> None:
    page = browser.new_page(viewport=DESKTOP)
    # Long tasks (over 50 ms on the main thread) from the first paint on.
    page.add_init_script(
        "window.longTasks = [];"
        "new PerformanceObserver(list => { for (const t of list.getEntries())"
        " window.longTasks.push(t.duration); })"
        ".observe({type: 'longtask', buffered: true});"
    )
    page.goto(server.url + "/dashboard/")
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#connection")).to_have_text("Live")

    jobs = 10_000
    for n in range(jobs):
        store.put({"job_id": f"job-{n:05d}", "job_status": "queued"})
    expect(page.locator("#shown")).to_contain_text("(10,000 loaded)", timeout=30_000)
    loaded = page.evaluate("window.longTasks.slice()")

    # 100 changes a second for 5 seconds, paced by the clock.
    recorder = Recorder(store)
    started = time.monotonic()
    for n in range(500):
        delay = started + n / 100 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if n % 2:
            recorder.done(f"job-{n:05d}")
        else:
            recorder.running(f"job-{n:05d}")
    expect(row(page, "job-00499")).to_contain_text("done", timeout=LIVE_MS)
    changes = page.evaluate("window.longTasks.slice()")[len(loaded) :]
    # The page still answers at once: typing in the search narrows at once.
    shoot(page, "desktop-busy")
    page.get_by_label("Job id starts with").fill("job-0049")
    expect(page.locator("#rows tr")).to_have_count(10)

    report = {
        "loading_10000": summary(loaded),
        "changes_100_per_s": summary(changes),
    }
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "long-tasks.json").write_text(json.dumps(report, indent=2))
    print("\nlong tasks (ms):", json.dumps(report))
    assert max(loaded + changes, default=0) < FREEZE_MS, report
    page.close()


def test_the_setting_turns_the_dashboard_off(tmp_path: Path, database: Path) -> None:
    env = clean_env(API_KEY=KEY, JOBSTATUS_STORE=f"sqlite://{database}")
    refused = subprocess.run(
        SERVE,
        env={**env, "JOBSTATUS_DASHBOARD": "maybe"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert "JOBSTATUS_DASHBOARD: expected one of on, off" in refused.stderr
    served = Served(tmp_path, {**env, "JOBSTATUS_DASHBOARD": "off"})
    try:
        answer = httpx.get(served.url + "/dashboard/")
        assert answer.status_code == 404
        assert answer.json()["message"] == "Not found"
    finally:
        served.close()


def test_record_text_is_shown_never_run(
    browser: Any, server: Served, store: Store
) -> None:
    hostile = '<img src=x onerror="window.ran = 1">'
    Recorder(store).failed("hostile", hostile)
    page = signed_in(browser, server, DESKTOP)
    page.get_by_role("button", name="hostile", exact=True).click()
    expect(page.locator("#detail-error")).to_have_text(f"Error — Error: {hostile}")
    assert page.evaluate("window.ran") is None
    assert page.locator("#detail img").count() == 0
    page.close()


def test_an_expired_job_leaves_the_list_and_its_pane_says_so(
    browser: Any, server: Served, store: Store
) -> None:
    recorder = Recorder(store)
    recorder.done("kept")
    recorder.done("listed")
    recorder.running("followed")  # not finished: its pane follows it
    page = signed_in(browser, server, DESKTOP)
    expect(row(page, "listed")).to_have_count(1)
    page.get_by_role("button", name="followed", exact=True).click()
    expect(page.locator("#detail-live")).to_have_text("Following live.")
    expired = [store.read(job_id) for job_id in ("listed", "followed")]
    store.expire([found for found in expired if found is not None], at=time.time())
    # The feed's expired events remove them, as a reload would.
    expect(row(page, "listed")).to_have_count(0, timeout=5000)
    expect(row(page, "followed")).to_have_count(0)
    expect(row(page, "kept")).to_have_count(1)
    # The pane's stream ends for good: it is not opened again, and again.
    expect(page.locator("#detail-live")).to_have_text(
        "Expired: the retention policy removed it."
    )
    opened: list[str] = []
    page.on("request", lambda request: opened.append(request.url))
    page.wait_for_timeout(3500)  # past the streams' retry: 2 s
    assert not [url for url in opened if "/v1/job/followed/events" in url]
    page.close()


def test_the_page_and_its_files_carry_the_policy(server: Served) -> None:
    for path in ("/dashboard/", "/dashboard/app.js", "/dashboard/style.css"):
        answer = httpx.get(server.url + path)
        assert answer.status_code == 200, path
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-content-type-options"] == "nosniff"
    # Its icon is inline (the CSP allows data: images): a browser asks the
    # host for no /favicon.ico, which would be the host's 404.
    page = httpx.get(server.url + "/dashboard/").text
    assert '<link rel="icon" href="data:image/svg+xml,' in page
    moved = httpx.get(server.url + "/dashboard")
    assert moved.status_code == 307
    assert moved.headers["location"] == "./dashboard/"
    # Its refusals are in the envelope, as every other path's.
    missing = httpx.get(server.url + "/dashboard/nope.js")
    assert missing.status_code == 404
    assert missing.json()["message"] == "Not found"
    for method, path in (("POST", "/dashboard/"), ("DELETE", "/dashboard/app.js")):
        refused = httpx.request(method, server.url + path)
        assert refused.status_code == 405, (method, path)
        assert refused.headers["allow"] == "GET, HEAD"
        assert refused.json()["message"].startswith(f"Method not allowed: {method}")


def test_a_host_mounts_the_page_beside_the_api_under_a_prefix(
    serve: Callable[[Any], str], tmp_path: Path
) -> None:
    service = make_service(store_from_url("memory://"), api_keys=[KEY])
    app = Starlette(
        routes=[
            *status_routes(service, "/jobs-api"),
            *dashboard_routes('/jobs-api"><script>', path="/ops/jobs"),
        ]
    )
    url = serve(app)
    page = httpx.get(url + "/ops/jobs/")
    assert page.status_code == 200
    # The prefix reaches the page escaped: it is data, never markup.
    assert 'data-api="../../jobs-api&quot;&gt;&lt;script&gt;"' in page.text
    assert httpx.get(url + "/ops/jobs/app.js").status_code == 200


def test_signs_in_and_follows_jobs_when_mounted_under_a_prefix(
    browser: Any, serve: Callable[[Any], str], store: Store
) -> None:
    service = make_service(store, api_keys=[KEY])
    url = serve(Starlette(routes=[Mount("/outer", app=create_app(service))]))
    Recorder(store).done("before-sign-in")
    page = browser.new_page(viewport=DESKTOP)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    # Without the slash, as a person types it: the redirect keeps /outer.
    page.goto(url + "/outer/dashboard")
    assert page.url == url + "/outer/dashboard/"
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#connection")).to_have_text("Live")
    expect(row(page, "before-sign-in")).to_have_count(1)
    Recorder(store).queued("mounted-1")
    expect(row(page, "mounted-1")).to_contain_text("queued", timeout=LIVE_MS)
    # Everything the page asked for (its files, sign-in, the feed) stayed
    # under the mount.
    assert requested
    assert not [u for u in requested if not u.startswith(url + "/outer/")]
    page.close()


def summary(durations: list[float]) -> dict[str, float]:
    return {
        "count": len(durations),
        "longest": round(max(durations, default=0.0), 1),
        "total": round(sum(durations), 1),
    }


def shoot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    # Written here, not by Playwright (path=), whose file writes start
    # threads in its own event loop that outlive the test.
    (SHOTS / f"{name}.png").write_bytes(page.screenshot(full_page=True))


def assert_accessible(page: Any) -> None:
    """axe-core's WCAG A and AA rules: no serious or critical violation."""
    # Evaluated through the DevTools protocol: the page's own policy lets
    # no other script in.
    page.evaluate(AXE.read_text(encoding="utf-8"))
    found = page.evaluate(
        "async () => (await axe.run(document, {runOnly: ['wcag2a', 'wcag2aa',"
        " 'wcag21a', 'wcag21aa', 'best-practice']})).violations"
        ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length,"
        " target: v.nodes[0].target}))"
    )
    serious = [v for v in found if v["impact"] in ("serious", "critical")]
    assert not serious, serious


def test_the_page_holds_what_the_store_says(
    browser: Any, server: Served, store: Store, database: Path
) -> None:
    """The feed's order, not the jobs' times, says which state is the last
    (two hosts' clocks apart); a status of any length keeps the page's
    width; a finished job's open pane hears of its expiry from the feed;
    a store of another life replaces what the page holds."""
    now = time.time()
    recorder = Recorder(store)
    recorder.done("finished")
    store.put({"job_id": "skewed", "job_status": "running"}, at=now + 2)
    store.put({"job_id": "long", "job_status": "x" * 20_000}, at=now)
    page = signed_in(browser, server, PHONE)
    expect(row(page, "long")).to_have_count(1)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width
    store.put({"job_id": "skewed", "job_status": "done"}, at=now + 1)
    expect(row(page, "skewed").locator(".badge")).to_have_text("done", timeout=LIVE_MS)
    page.get_by_role("button", name="finished", exact=True).click()
    expect(page.locator("#detail-live")).to_have_text("Finished.")
    found = store.read("finished")
    assert found is not None
    store.expire([found], at=time.time())
    expect(page.locator("#detail-live")).to_have_text(
        "Expired: the retention policy removed it.", timeout=LIVE_MS
    )
    # Another file in the served one's place: another life of the store.
    other = database.with_name("other.db")
    fresh = store_from_url(f"sqlite://{other}")
    fresh.put({"job_id": "fresh", "job_status": "queued"})
    fresh.close()
    os.replace(other, database)
    expect(row(page, "fresh")).to_have_count(1, timeout=LIVE_MS)
    expect(row(page, "skewed")).to_have_count(0)
    expect(page.locator("#shown")).to_have_text(
        "1 matching jobs (1 loaded)", timeout=LIVE_MS
    )
    page.close()


def test_the_page_signs_out_when_its_token_expires(
    browser: Any, server: Served
) -> None:
    minted = httpx.post(
        server.url + "/v1/tokens",
        json={"all": True, "ttl_seconds": 3},
        headers={"x-api-key": KEY},
    ).json()["response"]
    page = browser.new_page(viewport=DESKTOP)
    page.goto(server.url + "/dashboard/")
    # As the page keeps it: until when, by the browser's clock.
    page.evaluate(
        "token => sessionStorage.setItem('jobstatus.token',"
        " JSON.stringify({token, until: Date.now() + 3000}))",
        minted["token"],
    )
    page.reload()
    expect(page.locator("#connection")).to_have_text("Live")
    expect(page.locator("#sign-in-error")).to_have_text(
        "Your session has expired: sign in again.", timeout=LIVE_MS
    )
    assert page.evaluate("sessionStorage.getItem('jobstatus.token')") is None
    page.close()
