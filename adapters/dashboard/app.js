// The jobstatus dashboard: the job list live from the change feed.
// Plain modern JavaScript, no build step and no dependency: the page must
// work from the wheel on a machine with no internet.

// Where the API is, relative to this page ("..", "../../jobs-api"): the browser
// resolves it against the page's address, which keeps any prefix the app is
// mounted under.
const API = document.body.dataset.api;
const TERMINAL = new Set(document.body.dataset.terminal.split(",").filter(Boolean));
// The live window: the feed's snapshot, and the chart's span.
const WINDOW_SECONDS = 3600;
// The list draws only the rows in view: each is this tall (style.css).
const ROW_HEIGHT = 36;
const OVERSCAN = 8;
// The token outlives a working day at most; the key is never kept.
const TOKEN_TTL_SECONDS = 8 * 3600;
const HISTORY_PAGE = 1000;
// Redrawing the list at most this often keeps 100 changes per second cheap.
const RENDER_EVERY_MS = 100;
const COUNTS_EVERY_MS = 1000;
const RECONNECT_MS = 2000;
const TOKEN_KEY = "jobstatus.token";

const $ = (id) => document.getElementById(id);
const number = new Intl.NumberFormat("en");

const state = {
  token: null,
  expiryTimer: 0,
  /** Counts the lists the page has held: an answer asked for before the
   * last sign-out or store of another life belongs to none of them. */
  life: 0,
  /** job_id -> {job_id, job_status, updated_at, version} */
  jobs: new Map(),
  /** Changes not yet applied, the latest per job (bounded by the job count). */
  pending: new Map(),
  feed: null,
  lastEventId: "",
  reconnectTimer: 0,
  windowStart: 0,
  history: { cursor: null, loaded: 0, done: false, busy: false },
  renderTimer: 0,
  lastRender: 0,
  countsTimer: 0,
  counts: {},
  statuses: new Set(),
  rows: new Map(),
  found: [],
  scrollTop: 0,
  scrollFrame: 0,
  viewHeight: 600,
  detail: null,
};

// --- API -----------------------------------------------------------------

class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, { method = "GET", body, key } = {}) {
  const headers = { accept: "application/json" };
  if (key !== undefined) headers["x-api-key"] = key;
  else headers.authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const answer = await fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  let envelope = null;
  try {
    envelope = await answer.json();
  } catch {
    // Not the envelope (a proxy's page): the status says enough.
  }
  if (!answer.ok) {
    throw new ApiFailure(answer.status, envelope?.message || `HTTP ${answer.status}`);
  }
  return envelope.response;
}

function statusText(status) {
  return typeof status === "string" ? status : JSON.stringify(status);
}

// Direction controls (U+202E...) in a job's text would reorder what follows
// them: "\u202Edeliaf" would read "failed". Shown as escapes instead.
const BIDI_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** A value from a job, as text to show. */
function shown(value) {
  const text = typeof value === "string" ? value : JSON.stringify(value) ?? String(value);
  return text.replace(
    BIDI_CONTROLS,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

function statusClass(status) {
  const known = ["queued", "running", "done", "failed", "cancelled"];
  return known.includes(status) ? `s-${status}` : "s-other";
}

// --- signing in ------------------------------------------------------------

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("api-key");
  const key = input.value;
  input.value = "";
  $("sign-in-error").textContent = "";
  try {
    // A header cannot carry it (fetch throws), and no key is made of it.
    if (/[^\u0020-\u00ff]/.test(key)) throw new ApiFailure(401, "Unauthorized");
    const minted = await api("/v1/tokens", {
      method: "POST",
      body: { all: true, ttl_seconds: TOKEN_TTL_SECONDS },
      key,
    });
    // Until when, by this browser's clock: the server's may be another.
    const kept = { token: minted.token, until: Date.now() + TOKEN_TTL_SECONDS * 1000 };
    sessionStorage.setItem(TOKEN_KEY, JSON.stringify(kept));
    start(kept);
  } catch (err) {
    $("sign-in-error").textContent =
      err.status === 401 ? "That key was refused." : `Could not sign in: ${err.message}`;
    input.focus();
  }
});

$("sign-out").addEventListener("click", () => signOut(""));

/** Signed in with ``kept`` ({token, until}: this browser's time, in ms),
 * until the token expires: the server ends the feed then, and the page
 * asks for the key again. */
function start(kept) {
  state.token = kept.token;
  state.expiryTimer = setTimeout(
    () => signOut("Your session has expired: sign in again."),
    Math.max(0, kept.until - Date.now()),
  );
  $("skip").hidden = false;
  $("sign-in").hidden = true;
  $("board").hidden = false;
  $("sign-out").hidden = false;
  state.windowStart = Date.now() / 1000 - WINDOW_SECONDS;
  openFeed();
  refreshCounts();
  render();
  $("jobs-title").focus();
}

function signOut(reason) {
  closeDetail(false);
  closeFeed();
  clearTimeout(state.expiryTimer);
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  forgetJobs();
  $("skip").hidden = true;
  $("board").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = reason;
  setConnection("Signed out");
  $("api-key").focus();
}

/** Drops every job the page holds: signed out, or the store began another
 * life (its jobs, positions and counts are not those the page holds). */
function forgetJobs() {
  state.life += 1;
  Object.assign(state, {
    jobs: new Map(),
    pending: new Map(),
    lastEventId: "",
    history: { cursor: null, loaded: 0, done: false, busy: false },
    counts: {},
    statuses: new Set(),
    rows: new Map(),
    found: [],
  });
  $("rows").replaceChildren();
  $("counts").replaceChildren();
  const filter = $("status-filter");
  while (filter.options.length > 1) filter.remove(1); // all but "Every status"
}

function setConnection(text) {
  $("connection").textContent = text;
}

// --- the change feed ---------------------------------------------------------

function feedUrl() {
  const query = new URLSearchParams({ token: state.token });
  // Resuming after the last event misses nothing; the first time, the
  // snapshot of the window comes first.
  if (state.lastEventId) query.set("cursor", state.lastEventId);
  else query.set("since_seconds", String(WINDOW_SECONDS));
  return `${API}/v1/jobs/events?${query}`;
}

function openFeed() {
  closeFeed();
  const feed = new EventSource(feedUrl());
  state.feed = feed;
  setConnection("Connecting…");
  feed.onopen = () => {
    setConnection("Live");
    refreshCounts();
  };
  feed.addEventListener("job", (event) => {
    state.lastEventId = event.lastEventId;
    const job = JSON.parse(event.data);
    state.pending.set(job.job_id, job);
    schedule();
  });
  feed.addEventListener("expired", (event) => {
    // The retention policy removed the job: so does the list.
    state.lastEventId = event.lastEventId;
    const tombstone = JSON.parse(event.data);
    state.pending.set(tombstone.job_id, { job_id: tombstone.job_id, expired: true });
    schedule();
  });
  feed.onerror = () => {
    if (feed.readyState === EventSource.CLOSED) {
      // The server answered with an error (or not a stream): the browser
      // gives up, so ask why and start again.
      setConnection("Disconnected; reconnecting…");
      state.reconnectTimer = setTimeout(reconnect, RECONNECT_MS);
    } else {
      // A dropped connection: the browser reconnects with Last-Event-ID.
      setConnection("Reconnecting…");
    }
  };
}

function closeFeed() {
  clearTimeout(state.reconnectTimer);
  if (state.feed) state.feed.close();
  state.feed = null;
}

async function reconnect() {
  if (!state.token) return;
  // EventSource hides the status of a refused stream: ask for it once.
  const stop = new AbortController();
  let status = 0;
  try {
    const answer = await fetch(feedUrl(), { signal: stop.signal, cache: "no-store" });
    status = answer.status;
  } catch {
    status = 0; // unreachable: try again later
  } finally {
    stop.abort();
  }
  if (!state.token) return;
  if (status === 401) {
    signOut("Your session has expired: sign in again.");
    return;
  }
  if (status === 410) {
    // Another life of the store: what the page holds is stale.
    forgetJobs();
    state.windowStart = Date.now() / 1000 - WINDOW_SECONDS;
    render();
  }
  if (status === 0 || status >= 500) {
    state.reconnectTimer = setTimeout(reconnect, RECONNECT_MS);
    return;
  }
  openFeed();
}

// --- applying changes, one redraw per animation frame -------------------------

function schedule() {
  if (state.renderTimer) return;
  const wait = Math.max(0, RENDER_EVERY_MS - (performance.now() - state.lastRender));
  state.renderTimer = setTimeout(() => requestAnimationFrame(flush), wait);
}

function flush() {
  state.renderTimer = 0;
  const batch = state.pending;
  state.pending = new Map();
  for (const job of batch.values()) {
    if (!job.expired) merge(job, false);
    else {
      state.jobs.delete(job.job_id);
      // A finished job's own stream has ended: the feed tells its detail.
      if (state.detail?.id === job.job_id) showExpired(state.detail);
    }
  }
  if (batch.size) scheduleCounts();
  render();
}

/** The feed's events are applied in their order, the store's: a consumer
 * that does ends with the store's state, whatever the jobs' times say (two
 * hosts' clocks apart, a file copied with its time). A history page only
 * adds the jobs the page does not hold: the feed brings every change of
 * those it does. */
function merge(job, fromHistory) {
  if (fromHistory && state.jobs.has(job.job_id)) return;
  state.jobs.set(job.job_id, {
    job_id: job.job_id,
    job_status: job.job_status,
    updated_at: job.updated_at,
    version: job.version,
  });
  state.statuses.add(statusText(job.job_status));
}

// --- the list ----------------------------------------------------------------

function matching() {
  const status = $("status-filter").value;
  const prefix = $("id-search").value.trim();
  const found = [];
  for (const job of state.jobs.values()) {
    if (status && statusText(job.job_status) !== status) continue;
    if (prefix && !job.job_id.startsWith(prefix)) continue;
    found.push(job);
  }
  const oldest = $("order").value === "oldest";
  found.sort((a, b) => (oldest ? a.updated_at - b.updated_at : b.updated_at - a.updated_at));
  return found;
}

function render() {
  state.lastRender = performance.now();
  state.found = matching();
  renderRows();
  const found = state.found;
  $("list").setAttribute("aria-rowcount", String(found.length + 1));
  announceShown(
    `${number.format(found.length)} matching jobs (${number.format(state.jobs.size)} loaded)`,
  );
  renderStatusOptions();
  renderChart();
  renderHistory();
}

const ANNOUNCE_EVERY_MS = 2000;
let announced = { text: "", timer: 0 };

/** The count of matching jobs, a live region: rewritten at most every 2 s
 * (and once more after), where a burst of changes redrew it ten times a
 * second for a screen reader to read out. */
function announceShown(text) {
  announced.text = text;
  if (announced.timer) return;
  if ($("shown").textContent !== text) $("shown").textContent = text;
  announced.timer = setTimeout(() => {
    announced.timer = 0;
    if ($("shown").textContent !== announced.text) announceShown(announced.text);
  }, ANNOUNCE_EVERY_MS);
}

/** Draws only the rows in view (and a few around them): the cost of a
 * redraw stays that of a screenful, whatever the number of jobs. */
function renderRows() {
  const found = state.found;
  const first = Math.max(0, Math.floor(state.scrollTop / ROW_HEIGHT) - OVERSCAN);
  const count = Math.ceil(state.viewHeight / ROW_HEIGHT) + 2 * OVERSCAN;
  const shown = found.slice(first, first + count);
  const tbody = $("rows");
  const focused = tbody.contains(document.activeElement) ? document.activeElement : null;
  const rows = new Map();
  shown.forEach((job, index) => {
    const row = rowFor(job);
    row.setAttribute("aria-rowindex", String(first + index + 2));
    rows.set(job.job_id, row);
    if (tbody.children[index] !== row) tbody.insertBefore(row, tbody.children[index] || null);
  });
  while (tbody.children.length > shown.length) tbody.lastElementChild.remove();
  state.rows = rows;
  $("before").style.height = `${first * ROW_HEIGHT}px`;
  $("after").style.height = `${Math.max(0, found.length - first - shown.length) * ROW_HEIGHT}px`;
  // Moving a row blurs its button: keyboard users keep their place.
  if (focused && focused !== document.activeElement && tbody.contains(focused)) {
    focused.focus({ preventScroll: true });
  }
}

$("scroller").addEventListener("scroll", (event) => {
  state.scrollTop = event.target.scrollTop;
  if (!state.scrollFrame) {
    state.scrollFrame = requestAnimationFrame(() => {
      state.scrollFrame = 0;
      renderRows();
    });
  }
});
new ResizeObserver(([entry]) => {
  state.viewHeight = entry.contentRect.height;
  if (state.token) renderRows();
}).observe($("scroller"));

function rowFor(job) {
  let row = state.rows.get(job.job_id);
  if (!row) {
    row = document.createElement("tr");
    const head = document.createElement("th");
    head.scope = "row";
    const open = document.createElement("button");
    open.type = "button";
    open.className = "link";
    open.dataset.id = job.job_id;
    open.textContent = shown(job.job_id);
    head.append(open);
    const status = document.createElement("td");
    status.append(document.createElement("span"));
    const when = document.createElement("td");
    when.append(document.createElement("time"));
    row.append(head, status, when);
  }
  if (row.dataset.version !== job.version) {
    row.dataset.version = job.version;
    const text = statusText(job.job_status);
    const badge = row.children[1].firstChild;
    badge.className = `badge ${statusClass(text)}`;
    badge.textContent = badge.title = shown(text);
    const time = row.children[2].firstChild;
    const at = new Date(job.updated_at * 1000);
    time.dateTime = at.toISOString();
    time.title = formatTime(job.updated_at);
    // Today's changes by their time alone: the column stays narrow on a phone.
    time.textContent =
      at.toDateString() === new Date().toDateString()
        ? formatTime(job.updated_at).slice(11)
        : formatTime(job.updated_at).slice(0, 16);
  }
  return row;
}

function formatTime(seconds) {
  const at = new Date(seconds * 1000);
  if (Number.isNaN(at.getTime())) return String(seconds); // past any date
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())} ` +
    `${pad(at.getHours())}:${pad(at.getMinutes())}:${pad(at.getSeconds())}`
  );
}

function renderStatusOptions() {
  const select = $("status-filter");
  const have = new Set([...select.options].map((option) => option.value));
  for (const status of [...state.statuses, ...Object.keys(state.counts)].sort()) {
    if (have.has(status)) continue;
    have.add(status);
    const option = document.createElement("option");
    option.value = status;
    option.textContent = shown(status);
    select.append(option);
  }
}

$("rows").addEventListener("click", (event) => {
  const open = event.target.closest("button[data-id]");
  if (open) openDetail(open.dataset.id, open);
});

// Up and down arrows move between the rows' buttons.
$("rows").addEventListener("keydown", (event) => {
  if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
  const buttons = [...$("rows").querySelectorAll("button[data-id]")];
  const at = buttons.indexOf(document.activeElement);
  if (at < 0) return;
  const next = buttons[at + (event.key === "ArrowDown" ? 1 : -1)];
  if (next) {
    event.preventDefault();
    next.focus();
  }
});

for (const id of ["status-filter", "id-search", "order"]) {
  $(id).addEventListener("input", () => render());
}
$("filters").addEventListener("submit", (event) => event.preventDefault());

// --- counts ------------------------------------------------------------------

function scheduleCounts() {
  if (state.countsTimer) return;
  state.countsTimer = setTimeout(refreshCounts, COUNTS_EVERY_MS);
}

async function refreshCounts() {
  clearTimeout(state.countsTimer);
  state.countsTimer = 0;
  if (!state.token) return;
  const life = state.life;
  try {
    // Kept by the store: right for every job, not only the loaded ones.
    const answer = await api("/v1/jobs?limit=1&counts=true");
    if (life !== state.life) return;
    state.counts = answer.counts;
  } catch (err) {
    if (err.status === 401) signOut("Your session has expired: sign in again.");
    return;
  }
  const list = $("counts");
  const entries = Object.entries(state.counts).sort(([a], [b]) => a.localeCompare(b));
  const total = entries.reduce((sum, [, n]) => sum + n, 0);
  const items = entries.map(([status, n]) => {
    const item = document.createElement("li");
    const badge = document.createElement("span");
    badge.className = `badge ${statusClass(status)}`;
    badge.textContent = badge.title = shown(status);
    const count = document.createElement("strong");
    count.textContent = number.format(n);
    item.append(badge, " ", count);
    return item;
  });
  const all = document.createElement("li");
  all.className = "total";
  all.textContent = `all: ${number.format(total)}`;
  list.replaceChildren(...items, all);
  renderStatusOptions();
}

// --- the chart: jobs finished per minute, last hour ---------------------------

const COLORS = {
  done: "#1a7f37",
  failed: "#cf222e",
  cancelled: "#57606a",
};
const OTHER_COLOR = "#6639ba";
let chartDrawn = "";
// Read from a ResizeObserver, never from layout during a redraw: asking for
// clientWidth there would force a layout of the whole list each time.
let chartWidth = 600;
new ResizeObserver(([entry]) => {
  chartWidth = Math.max(120, Math.round(entry.contentRect.width));
  if (state.token) renderChart();
}).observe($("chart"));

function renderChart() {
  const now = Date.now() / 1000;
  const minute = Math.floor(now / 60);
  const buckets = new Map(); // status -> Array(60)
  for (const job of state.jobs.values()) {
    const status = statusText(job.job_status);
    if (!TERMINAL.has(status)) continue;
    const age = minute - Math.floor(job.updated_at / 60);
    if (age < 0 || age >= 60) continue;
    if (!buckets.has(status)) buckets.set(status, new Array(60).fill(0));
    buckets.get(status)[59 - age] += 1;
  }
  const statuses = [...buckets.keys()].sort();
  const key = `${minute}|${statuses.map((s) => `${s}:${buckets.get(s).join(",")}`).join("|")}`;
  const canvas = $("chart");
  const width = chartWidth;
  const drawn = `${key}|${width}|${devicePixelRatio}`;
  if (drawn === chartDrawn) return;
  chartDrawn = drawn;
  const height = 140;
  canvas.width = Math.round(width * devicePixelRatio);
  canvas.height = Math.round(height * devicePixelRatio);
  const draw = canvas.getContext("2d");
  draw.scale(devicePixelRatio, devicePixelRatio);
  draw.clearRect(0, 0, width, height);
  let peak = 1;
  for (let i = 0; i < 60; i++) {
    let sum = 0;
    for (const s of statuses) sum += buckets.get(s)[i];
    peak = Math.max(peak, sum);
  }
  const left = 28;
  const bottom = height - 18;
  const bar = (width - left) / 60;
  draw.fillStyle = "#24292f";
  draw.font = "11px system-ui, sans-serif";
  draw.fillText(String(peak), 2, 12);
  draw.fillText("0", 2, bottom);
  draw.fillText("−60 min", left, height - 4);
  draw.fillText("now", width - 24, height - 4);
  draw.strokeStyle = "#8c959f";
  draw.beginPath();
  draw.moveTo(left, bottom + 0.5);
  draw.lineTo(width, bottom + 0.5);
  draw.stroke();
  for (let i = 0; i < 60; i++) {
    let y = bottom;
    for (const s of statuses) {
      const n = buckets.get(s)[i];
      if (!n) continue;
      const h = (n / peak) * (bottom - 14);
      draw.fillStyle = COLORS[s] || OTHER_COLOR;
      draw.fillRect(left + i * bar + 1, y - h, Math.max(1, bar - 2), h);
      y -= h;
    }
  }
  const totals = statuses.map((s) => `${s} ${buckets.get(s).reduce((a, b) => a + b, 0)}`);
  canvas.setAttribute(
    "aria-label",
    `Jobs finished per minute over the last hour: ${totals.join(", ") || "none"}`,
  );
  const legend = $("legend");
  legend.replaceChildren(
    ...statuses.map((s) => {
      const item = document.createElement("span");
      item.className = "key";
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = COLORS[s] || OTHER_COLOR;
      item.append(swatch, s);
      return item;
    }),
  );
}

// The chart moves with the clock too, not only with changes.
setInterval(() => {
  if (state.token) renderChart();
}, 15000);

// --- history: the list API's cursor, oldest change first ----------------------

$("older").addEventListener("click", loadOlder);

async function loadOlder() {
  const history = state.history;
  if (history.busy || history.done) return;
  history.busy = true;
  renderHistory();
  const life = state.life;
  try {
    const query = new URLSearchParams({ limit: String(HISTORY_PAGE) });
    if (history.cursor) query.set("cursor", history.cursor);
    const page = await api(`/v1/jobs?${query}`);
    if (life !== state.life) return; // the list it was asked for is gone
    for (const job of page.jobs) merge(job, true);
    history.cursor = page.cursor;
    history.loaded += page.jobs.length;
    const last = page.jobs[page.jobs.length - 1];
    // Past the live window's start, the feed holds the rest.
    history.done = !page.has_more || (last !== undefined && last.updated_at >= state.windowStart);
  } catch (err) {
    if (life !== state.life) return;
    if (err.status === 401) {
      signOut("Your session has expired: sign in again.");
      return;
    }
    $("history").textContent = `Could not load older jobs: ${err.message}`;
    history.busy = false;
    return;
  }
  history.busy = false;
  render();
}

function renderHistory() {
  const history = state.history;
  const button = $("older");
  button.disabled = history.busy || history.done;
  $("history").textContent = history.done
    ? `All history loaded (${number.format(history.loaded)} jobs read).`
    : history.busy
      ? "Loading…"
      : history.loaded
        ? `${number.format(history.loaded)} jobs read from the start of history.`
        : `The list holds the last hour; older jobs load ${number.format(HISTORY_PAGE)} at a time.`;
}

// --- a job's detail, with its own stream ----------------------------------------

function openDetail(id, opener) {
  closeDetail(false);
  const detail = { id, opener, stream: null, asked: 0, retryTimer: 0 };
  state.detail = detail;
  $("detail").hidden = false;
  $("panes").classList.add("with-detail");
  $("detail-title").textContent = `Job ${id}`;
  $("detail-fields").replaceChildren();
  $("detail-record").textContent = "";
  $("detail-progress").hidden = true;
  $("detail-error").hidden = true;
  $("detail-title").focus();
  followDetail(detail);
  loadRecord(detail);
}

/** The job's own stream, from its state now. */
function followDetail(detail) {
  const query = new URLSearchParams({ token: state.token });
  const stream = new EventSource(`${API}/v1/job/${encodeURIComponent(detail.id)}/events?${query}`);
  detail.stream = stream;
  $("detail-live").textContent = "Connecting…";
  stream.onopen = () => {
    $("detail-live").textContent = "Following live.";
  };
  stream.addEventListener("job", (event) => {
    const job = JSON.parse(event.data);
    loadRecord(detail);
    if (TERMINAL.has(statusText(job.job_status))) {
      // The server ends the stream after a terminal status; do not reopen it.
      stream.close();
      $("detail-live").textContent = "Finished.";
    }
  });
  stream.addEventListener("expired", () => showExpired(detail));
  stream.onerror = () => {
    if (stream.readyState !== EventSource.CLOSED) return; // the browser reconnects
    // Refused, or its resume was (410: another life of the store): the
    // browser gives up, so start again from the job's state now.
    $("detail-live").textContent = "Reconnecting…";
    detail.retryTimer = setTimeout(() => {
      if (state.detail === detail && state.token) followDetail(detail);
    }, RECONNECT_MS);
  };
}

function showExpired(detail) {
  // Nothing more will come: closed here rather than reconnecting to be
  // told so (a resumed stream of an ended job is answered 204).
  if (detail.stream) detail.stream.close();
  clearTimeout(detail.retryTimer);
  $("detail-live").textContent = "Expired: the retention policy removed it.";
}

function closeDetail(returnFocus) {
  const detail = state.detail;
  if (!detail) return;
  state.detail = null;
  clearTimeout(detail.retryTimer);
  if (detail.stream) detail.stream.close();
  $("detail").hidden = true;
  $("panes").classList.remove("with-detail");
  if (returnFocus) (rowButton(detail.id) || $("jobs-title")).focus();
}

/** The button of a job's row, its row scrolled into view and drawn first
 * (the list draws only the rows in view); null for a job not listed. */
function rowButton(id) {
  const at = state.found.findIndex((job) => job.job_id === id);
  if (at < 0) return null;
  const scroller = $("scroller");
  const top = at * ROW_HEIGHT;
  if (top < scroller.scrollTop || top + ROW_HEIGHT > scroller.scrollTop + state.viewHeight) {
    scroller.scrollTop = Math.max(0, top - state.viewHeight / 2);
    state.scrollTop = scroller.scrollTop;
    renderRows();
  }
  return document.querySelector(`button[data-id="${CSS.escape(id)}"]`);
}

$("close-detail").addEventListener("click", () => closeDetail(true));
document.addEventListener("keydown", (event) => {
  // In a field, Escape is the field's (a search box clears itself).
  if (event.key !== "Escape" || !state.detail) return;
  if (event.target.closest?.("input, select, textarea")) return;
  closeDetail(true);
});

async function loadRecord(detail) {
  const asked = ++detail.asked;
  let record;
  try {
    record = await api(`/v1/job/${encodeURIComponent(detail.id)}`);
  } catch (err) {
    if (state.detail !== detail || asked !== detail.asked) return;
    if (err.status === 410) showExpired(detail);
    else {
      $("detail-live").textContent =
        err.status === 404 ? "No such job yet; waiting for it." : `Could not read the job: ${err.message}`;
    }
    return;
  }
  // A later answer may have come first: keep the newest question's.
  if (state.detail !== detail || asked !== detail.asked) return;
  showRecord(record);
}

function showRecord(record) {
  const fields = $("detail-fields");
  const rows = [
    ["Status", statusText(record.job_status)],
    ["Attempt", record.attempt],
    ["Task", record.task],
    ["Created", record.created_at],
    ["Started", record.started_at],
    ["Finished", record.finished_at],
  ];
  const known = state.jobs.get(record.job_id);
  if (known) rows.push(["Last change", known.updated_at]);
  const items = [];
  for (const [name, value] of rows) {
    if (value === undefined || value === null) continue;
    const term = document.createElement("dt");
    term.textContent = name;
    const text = document.createElement("dd");
    text.textContent =
      typeof value === "number" && name !== "Attempt" ? formatTime(value) : shown(value);
    items.push(term, text);
  }
  fields.replaceChildren(...items);

  const progress = record.progress;
  const box = $("detail-progress");
  box.hidden = !progress || typeof progress !== "object";
  if (!box.hidden) {
    const bar = $("progress-bar");
    // Another program's numbers may be anything: a share only of finite ones.
    const finite = (value) => (Number.isFinite(Number(value)) ? Number(value) : 0);
    const done = finite(progress.done);
    const total = finite(progress.total);
    let label = `Progress: ${shown(progress.done ?? 0)}`;
    if (total > 0) {
      const part = Math.min(Math.max(done, 0), total);
      bar.max = total;
      bar.value = part;
      label += ` of ${shown(progress.total)} (${Math.round((100 * part) / total)}%)`;
    } else {
      bar.removeAttribute("value"); // indeterminate: no total to measure against
    }
    if (progress.message) label += ` — ${shown(progress.message)}`;
    $("progress-label").textContent = label;
  }

  const error = record.error;
  const errorBox = $("detail-error");
  errorBox.hidden = !error;
  if (error) {
    const text =
      typeof error === "object"
        ? `${shown(error.type || "Error")}: ${shown(error.message ?? "")}`
        : shown(error);
    errorBox.textContent = `Error — ${text}`;
  }
  $("detail-record").textContent = JSON.stringify(record, null, 2);
}

// --- on load -------------------------------------------------------------------

/** The token a reload keeps ({token, until}), if it is still good. */
function keptToken() {
  try {
    const kept = JSON.parse(sessionStorage.getItem(TOKEN_KEY));
    if (typeof kept?.token === "string" && kept.until > Date.now()) return kept;
  } catch {
    // Not what this page keeps: sign in again.
  }
  sessionStorage.removeItem(TOKEN_KEY);
  return null;
}

const kept = keptToken();
if (kept) start(kept);
else {
  $("skip").hidden = true;
  $("api-key").focus();
}
