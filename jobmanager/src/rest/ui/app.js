// The Sluice web UI: plain modern JavaScript, no framework and no build step (see docs/ui.md).
//
// Three pages behind hash routes (#/, #/jobs/<id>, #/taskmanagers), each refreshed every POLL_INTERVAL_MS while
// the tab is visible, from the JobManager's REST API. Every element a test selects has a stable id or data-*
// attribute. Server text is only ever put in the page through textContent or attributes (never innerHTML), and
// the page's Content-Security-Policy forbids inline scripts and style attributes: styling is by class, and
// charts are SVG whose geometry is set through attributes.
"use strict";

/** Where the token lives: this tab's sessionStorage, sent only in the Authorization header (never a cookie, so
 * pages of other sites cannot make the browser send it). */
const TOKEN_KEY = "sluice.token";
/** How often the visible page refreshes. */
const POLL_INTERVAL_MS = 1000;
/** Flink's thresholds for busy and back-pressured time: OK up to 10 %, LOW up to 50 %, HIGH above. The server
 * sends the levels; these only classify a ratio the server sent without its level. */
const LEVEL_LOW_ABOVE = 0.1;
const LEVEL_HIGH_ABOVE = 0.5;
/** Checkpoints drawn in the duration chart (the newest ones). */
const CHART_CHECKPOINTS_MAX = 60;
/** Rows of the checkpoint history table (savepoints are always shown). */
const CHECKPOINT_ROWS_SHOWN = 20;
/** Job states after which nothing can be done to the job. */
const TERMINAL_STATES = new Set(["FINISHED", "FAILED", "CANCELED"]);
const SVG_NS = "http://www.w3.org/2000/svg";

// ---------------------------------------------------------------------------------------------------------------
// The REST API

/** A failed API call; `message` is the server's `error` text as is, or what went wrong reaching it. */
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
  /** A route this JobManager does not serve (an older version): the page shows what it can without it. */
  get isMissingRoute() {
    return this.status === 404 && this.message.startsWith("no such route");
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, { method, body, headers, cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, `cannot reach the JobManager: ${e.message}`);
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON: a proxy's error page, say; shown below with the status.
  }
  if (!response.ok) {
    const message = json && typeof json.error === "string"
      ? json.error
      : `HTTP ${response.status} ${response.statusText}${text ? `: ${text.slice(0, 300)}` : ""}`;
    throw new ApiError(response.status, message);
  }
  return json;
}

/** Like api(), but a route this JobManager does not serve yields `{ missing: message }` instead of an error. */
async function apiOptional(path) {
  try {
    return await api(path);
  } catch (e) {
    if (e instanceof ApiError && e.isMissingRoute) return { missing: e.message };
    throw e;
  }
}

const jobPath = (jobId, rest = "") => `/jobs/${encodeURIComponent(jobId)}${rest}`;

// ---------------------------------------------------------------------------------------------------------------
// DOM helpers: elements are built from data with text nodes and attributes only.

function setAttributes(el, attributes) {
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
}

function appendChildren(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** An HTML element: h("td", { class: "num" }, "12"). Strings become text nodes. */
function h(tag, attributes, ...children) {
  const el = document.createElement(tag);
  setAttributes(el, attributes);
  appendChildren(el, children);
  return el;
}

/** An SVG element, built like h(). */
function s(tag, attributes, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttributes(el, attributes);
  appendChildren(el, children);
  return el;
}

/** Replaces an element's children, skipping null/undefined/false like h() does. */
function replaceContent(el, ...children) {
  el.replaceChildren();
  appendChildren(el, children);
}

/** A table with a header row and a body whose rows syncRows() keeps. */
function table(id, caption, headings) {
  const body = h("tbody");
  const el = h("table", { id, class: "data" },
    caption ? h("caption", { class: "visually-hidden" }, caption) : null,
    h("thead", {}, h("tr", {}, headings.map(([text, numeric]) => h("th", { scope: "col", class: numeric ? "num" : null }, text)))),
    body);
  return { el, body };
}

/**
 * Brings a tbody in line with `items`, reusing the row of each key so that focus and selection survive a refresh:
 * a cell changes only when its text does. `cellsOf(item)` gives each cell as a string, a Node, or
 * `{ content, class }`; `attributesOf(item)` the row's data-* attributes.
 */
function syncRows(body, items, keyOf, cellsOf, attributesOf = () => ({})) {
  const existing = new Map([...body.rows].map(row => [row.dataset.key, row]));
  const rows = items.map(item => {
    const key = String(keyOf(item));
    let row = existing.get(key);
    if (!row) row = h("tr", { "data-key": key });
    for (const [name, value] of Object.entries(attributesOf(item))) {
      if (value === null || value === undefined) row.removeAttribute(name);
      else if (row.getAttribute(name) !== String(value)) row.setAttribute(name, String(value));
    }
    cellsOf(item).forEach((cell, i) => {
      const spec = cell !== null && typeof cell === "object" && !(cell instanceof Node) ? cell : { content: cell };
      const content = spec.content instanceof Node ? spec.content : document.createTextNode(spec.content ?? DASH);
      let td = row.cells[i];
      if (!td) td = row.appendChild(h("td"));
      const className = spec.class || "";
      if (td.className !== className) td.className = className;
      if (td.dataset.text !== content.textContent || td.childNodes.length === 0) {
        td.dataset.text = content.textContent;
        td.replaceChildren(content);
      }
    });
    return row;
  });
  const same = rows.length === body.rows.length && rows.every((row, i) => body.rows[i] === row);
  if (!same) body.replaceChildren(...rows);
}

/** An empty-state row spanning the table. */
function placeholderRow(body, columns, text) {
  body.replaceChildren(h("tr", { class: "placeholder" }, h("td", { colspan: columns }, text)));
}

// ---------------------------------------------------------------------------------------------------------------
// Formatting. Every function takes null/undefined and shows "–" for it.

const DASH = "–";
const isNumber = value => typeof value === "number" && Number.isFinite(value);

function formatCount(n) {
  if (!isNumber(n)) return DASH;
  const abs = Math.abs(n);
  if (abs >= 1e9) return `${(n / 1e9).toFixed(1)} G`;
  if (abs >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
  if (abs >= 1e4) return `${(n / 1e3).toFixed(1)} k`;
  if (abs >= 100 || Number.isInteger(n)) return String(Math.round(n));
  return n.toFixed(1);
}

const formatRate = n => (isNumber(n) ? `${formatCount(n)}/s` : DASH);

function formatBytes(n) {
  if (!isNumber(n)) return DASH;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

const formatByteRate = n => (isNumber(n) ? `${formatBytes(n)}/s` : DASH);

function formatDuration(ms) {
  if (!isNumber(ms)) return DASH;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const seconds = Math.floor(ms / 1000);
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86_400)} d ${Math.floor((seconds % 86_400) / 3600)} h`;
}

function formatTime(ms) {
  if (!isNumber(ms) || ms <= 0) return DASH;
  const date = new Date(ms);
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay ? date.toLocaleTimeString() : date.toLocaleString();
}

/** A watermark: the time of day with milliseconds (watermarks move in small steps). */
function formatWatermark(ms) {
  if (!isNumber(ms)) return DASH;
  const date = new Date(ms);
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  const time = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
  return date.toDateString() === new Date().toDateString() ? time : `${date.toLocaleDateString()} ${time}`;
}

const formatPercent = ratio => (isNumber(ratio) ? `${Math.round(ratio * 100)} %` : DASH);

/** OK / LOW / HIGH as the server says, else from the ratio, else UNKNOWN (an older JobManager sends neither). */
function levelOf(level, ratio) {
  if (level === "OK" || level === "LOW" || level === "HIGH") return level;
  if (!isNumber(ratio)) return "UNKNOWN";
  if (ratio > LEVEL_HIGH_ABOVE) return "HIGH";
  if (ratio > LEVEL_LOW_ABOVE) return "LOW";
  return "OK";
}

function statusBadge(status, id) {
  return h("span", { id, class: `badge status-${String(status || "UNKNOWN").toLowerCase()}`, "data-status": status }, status || "UNKNOWN");
}

function levelBadge(level) {
  return h("span", { class: `badge level-${level.toLowerCase()}`, "data-level": level }, level === "UNKNOWN" ? "n/a" : level);
}

/** A ratio and its level, e.g. "87 % HIGH". */
function ratioCell(ratio, level) {
  const lvl = levelOf(level, ratio);
  return { content: h("span", { class: "ratio" }, formatPercent(ratio), " ", levelBadge(lvl)), class: "num" };
}

// ---------------------------------------------------------------------------------------------------------------
// Session: the token form.

const loginForm = document.getElementById("login");
const tokenInput = document.getElementById("token");
const signedIn = document.getElementById("signed-in");
const loginHint = document.getElementById("login-hint");
const pollError = document.getElementById("poll-error");
const refreshed = document.getElementById("refreshed");
const view = document.getElementById("view");

function showSignedIn(yes) {
  loginForm.hidden = yes;
  loginHint.hidden = yes;
  signedIn.hidden = !yes || !sessionStorage.getItem(TOKEN_KEY);
}

loginForm.addEventListener("submit", event => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
  tokenInput.value = "";
  route();
});

document.getElementById("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showSignedIn(false);
  stopPolling();
  view.replaceChildren(h("p", { class: "hint" }, "Signed out."));
  tokenInput.focus();
});

function showPollError(message) {
  pollError.hidden = !message;
  pollError.textContent = message || "";
}

// ---------------------------------------------------------------------------------------------------------------
// Routing and polling. A page is { refresh(): Promise }; the router builds it into `view`, and one timer calls its
// refresh after the previous one finished (never two at once).

let page = null;
let pollTimer = null;
/** Bumped on every route change, so a refresh of a page that was left cannot schedule the next one. */
let generation = 0;
/** Whether a refresh of the current page is under way (the tab becoming visible then starts none). */
let ticking = false;

function stopPolling() {
  clearTimeout(pollTimer);
  pollTimer = null;
  ticking = false;
  generation += 1;
}

async function tick(myGeneration) {
  clearTimeout(pollTimer);
  pollTimer = null;
  ticking = true;
  let signedOut = false;
  try {
    await page.refresh();
    if (myGeneration !== generation) return;
    showPollError(null);
    showSignedIn(true);
    refreshed.textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (myGeneration !== generation) return;
    showPollError(e.message);
    if (e instanceof ApiError && e.status === 401) {
      refreshed.textContent = "";
      showSignedIn(false);
      tokenInput.focus();
      signedOut = true; // nothing to show until a token is given
    }
  } finally {
    if (myGeneration === generation) ticking = false;
  }
  if (!signedOut && myGeneration === generation && document.visibilityState === "visible") {
    pollTimer = setTimeout(() => tick(myGeneration), POLL_INTERVAL_MS);
  }
}

function route() {
  stopPolling();
  const hash = location.hash || "#/";
  const job = /^#\/jobs\/([^/]+)$/.exec(hash);
  for (const link of document.querySelectorAll("[data-nav]")) {
    const current = (link.dataset.nav === "overview" && (hash === "#/" || job)) || (link.dataset.nav === "taskmanagers" && hash === "#/taskmanagers");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  view.replaceChildren();
  if (hash === "#/" || hash === "#") page = overviewPage(view);
  else if (job) page = jobPage(view, decodeURIComponent(job[1]));
  else if (hash === "#/taskmanagers") page = taskManagersPage(view);
  else {
    page = { refresh: async () => {} };
    view.append(h("h1", {}, "No such page"), h("p", {}, h("a", { href: "#/" }, "Back to the overview")));
  }
  const myGeneration = generation;
  tick(myGeneration);
}

window.addEventListener("hashchange", route);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && page && pollTimer === null && !ticking) {
    const myGeneration = generation;
    tick(myGeneration);
  } else if (document.visibilityState !== "visible") {
    clearTimeout(pollTimer);
    pollTimer = null;
  }
});

// ---------------------------------------------------------------------------------------------------------------
// Overview: the cluster, job submission, the jobs.

function overviewPage(root) {
  const stats = h("dl", { class: "stats" });
  const cluster = h("section", { id: "cluster", "aria-labelledby": "cluster-title" }, h("h2", { id: "cluster-title" }, "Cluster"), stats);

  const fileInput = h("input", { id: "job-file", type: "file", accept: ".json,application/json", required: true });
  const savepointInput = h("input", { id: "submit-savepoint-path", type: "text", size: 40, placeholder: "optional: a savepoint or retained checkpoint" });
  const submitButton = h("button", { id: "submit-job", type: "submit" }, "Submit");
  const submitResult = h("div", { id: "submit-result", class: "result", role: "status", "aria-live": "polite" });
  const form = h("form", { id: "submit-form", class: "submit-form" },
    h("div", { class: "field" }, h("label", { for: "job-file" }, "Job file (JSON)"), fileInput),
    h("div", { class: "field" }, h("label", { for: "submit-savepoint-path" }, "Start from"), savepointInput),
    submitButton);
  form.addEventListener("submit", async event => {
    event.preventDefault();
    const file = fileInput.files[0];
    if (!file) return;
    const body = new FormData();
    body.append("job_file", file, file.name);
    const from = savepointInput.value.trim();
    const path = from ? `/jobs/submit?savepoint_path=${encodeURIComponent(from)}` : "/jobs/submit";
    submitButton.disabled = true;
    showResult(submitResult, "pending", `Submitting ${file.name}…`);
    try {
      const answer = await api(path, { method: "POST", body });
      showResult(submitResult, "ok", "Submitted: ",
        h("a", { href: `#/jobs/${encodeURIComponent(answer.job_id)}`, "data-submitted-job-id": answer.job_id }, answer.job_id),
        ` (${answer.status})`);
      form.reset();
      // Show the new job now rather than at the next poll, which reports any error of its own.
      page.refresh().catch(() => {});
    } catch (e) {
      showResult(submitResult, "error", e.message);
    } finally {
      submitButton.disabled = false;
    }
  });
  const submit = h("section", { id: "submit", "aria-labelledby": "submit-title" }, h("h2", { id: "submit-title" }, "Submit a job"), form, submitResult);

  const jobsTable = table("jobs", "Jobs", [["Name"], ["Job id"], ["State"], ["Started"], ["Duration", true], ["Records/s", true]]);
  const jobs = h("section", { "aria-labelledby": "jobs-title" }, h("h2", { id: "jobs-title" }, "Jobs"), h("div", { class: "scroll" }, jobsTable.el));
  root.append(h("h1", { class: "visually-hidden" }, "Overview"), cluster, submit, jobs);

  return {
    async refresh() {
      const [jobList, metrics] = await Promise.all([api("/jobs"), api("/cluster/metrics")]);
      const list = [...jobList.jobs].sort((a, b) => (b.start_time || 0) - (a.start_time || 0));
      renderClusterStats(stats, metrics, list);
      if (list.length === 0) {
        placeholderRow(jobsTable.body, 6, "No jobs yet: submit a job file above.");
        return;
      }
      const now = Date.now();
      syncRows(jobsTable.body, list, job => job.job_id, job => [
        h("a", { href: `#/jobs/${encodeURIComponent(job.job_id)}`, "data-job-link": job.job_id }, job.name || job.job_id),
        { content: job.job_id, class: "mono" },
        statusBadge(job.status),
        { content: formatTime(job.start_time), class: "nowrap" },
        { content: formatDuration(job.duration_ms ?? (job.start_time ? (job.end_time || now) - job.start_time : null)), class: "num" },
        { content: formatRate(job.records_per_second), class: "num records-per-second" },
      ], job => ({ "data-job-id": job.job_id, "data-status": job.status, "data-records-per-second": job.records_per_second ?? "" }));
    },
  };
}

function renderClusterStats(stats, metrics, jobs) {
  const byState = new Map();
  for (const job of jobs) byState.set(job.status, (byState.get(job.status) || 0) + 1);
  const stateChips = byState.size === 0
    ? h("span", { class: "muted" }, "none")
    : [...byState].sort().map(([status, n]) => h("span", { class: "chip", "data-status-count": status }, statusBadge(status), ` ${n}`));
  const stat = (key, label, value) => h("div", { class: "stat", "data-stat": key }, h("dt", {}, label), h("dd", {}, value));
  const used = metrics.total_slots - metrics.available_slots;
  replaceContent(stats,
    stat("taskmanagers", "TaskManagers", `${metrics.active_task_managers} active` +
      (metrics.total_task_managers > metrics.active_task_managers ? ` of ${metrics.total_task_managers}` : "")),
    stat("slots", "Slots", `${used} used of ${metrics.total_slots} (${metrics.available_slots} free)`),
    stat("jobs", "Jobs", stateChips),
    stat("leader", "Leader", metrics.leader ? `epoch ${metrics.leader.epoch} at ${metrics.leader.rest_address}` : "none known"));
}

/** Shows an action's outcome; errors are the server's text as is. */
function showResult(el, state, ...content) {
  el.dataset.state = state;
  el.setAttribute("role", state === "error" ? "alert" : "status");
  el.replaceChildren(...content.map(c => (c instanceof Node ? c : document.createTextNode(String(c)))));
}

// ---------------------------------------------------------------------------------------------------------------
// TaskManagers

function taskManagersPage(root) {
  const summary = h("p", { id: "taskmanagers-summary" });
  const tms = table("taskmanagers", "TaskManagers", [["Id"], ["State"], ["Slots used / total", true], ["Tasks", true],
    ["Memory (RSS)", true], ["Heartbeat age", true], ["RPC"], ["Data"], ["Metrics"]]);
  root.append(h("h1", {}, "TaskManagers"), summary, h("div", { class: "scroll" }, tms.el));
  return {
    async refresh() {
      const [answer, metrics] = await Promise.all([api("/taskmanagers"), api("/cluster/metrics")]);
      summary.textContent = `${metrics.active_task_managers} active of ${metrics.total_task_managers}; ` +
        `${metrics.available_slots} of ${metrics.total_slots} slots free (utilization ${formatPercent(metrics.utilization)}).`;
      const list = [...answer.taskmanagers].sort((a, b) => a.id.localeCompare(b.id));
      if (list.length === 0) {
        placeholderRow(tms.body, 9, "No TaskManager has registered.");
        return;
      }
      const now = Date.now();
      syncRows(tms.body, list, tm => tm.id, tm => [
        { content: tm.id, class: "mono" },
        statusBadge(tm.state),
        { content: `${tm.slots_total - tm.slots_free} / ${tm.slots_total}`, class: "num" },
        { content: isNumber(tm.tasks) ? String(tm.tasks) : DASH, class: "num" },
        { content: formatBytes(tm.memory_rss_bytes), class: "num" },
        { content: formatDuration(tm.heartbeat_age_ms ?? (tm.last_heartbeat ? Math.max(0, now - tm.last_heartbeat) : null)), class: "num" },
        { content: tm.rpc_address, class: "mono" },
        { content: tm.data_address, class: "mono" },
        { content: tm.metrics_address, class: "mono" },
      ], tm => ({ "data-tm-id": tm.id, "data-state": tm.state }));
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Job page

function jobPage(root, jobId) {
  const state = {
    plan: null,
    graph: null,
    selectedVertex: null,
    /** The savepoint this page triggered and follows: { triggerId, stop }. */
    savepoint: null,
    selectedCheckpoint: null,
    /** Whether the selected checkpoint has ended (its acknowledgements no longer change). */
    checkpointSettled: false,
    details: null,
    /** Why the plan route gave nothing (an older JobManager): the graph is then drawn from the job's details. */
    planMissing: null,
  };

  // Header and actions
  const title = h("h1", { id: "job-name" }, jobId);
  const status = h("span", { id: "job-status-slot" });
  const facts = h("dl", { id: "job-facts", class: "facts" });
  const reason = h("p", { id: "job-reason", class: "reason", hidden: true });
  const actionResult = h("div", { id: "action-result", class: "result", role: "status", "aria-live": "polite" });
  const button = (id, text, handler, kind) => h("button", { id, type: "button", class: kind, onclick: handler }, text);
  const actions = h("div", { class: "actions", role: "group", "aria-label": "Job actions" },
    button("action-savepoint", "Trigger savepoint", () => savepoint(false)),
    button("action-stop", "Stop with savepoint", () => {
      if (confirm(`Take a savepoint of job ${jobId} and then stop it?`)) savepoint(true);
    }),
    button("action-cancel", "Cancel job", cancel, "danger"));

  async function savepoint(stop) {
    showResult(actionResult, "pending", stop ? "Requesting stop with savepoint…" : "Requesting a savepoint…");
    try {
      const answer = await api(jobPath(jobId, stop ? "/stop" : "/savepoint"), { method: "POST" });
      state.savepoint = { triggerId: answer.trigger_id, stop };
      showResult(actionResult, "pending", `${stop ? "Stop with savepoint" : "Savepoint"} ${answer.trigger_id}: ${answer.status}`);
      actionResult.dataset.triggerId = answer.trigger_id;
    } catch (e) {
      showResult(actionResult, "error", e.message);
    }
  }

  async function cancel() {
    if (!confirm(`Cancel job ${jobId}? Its state is not saved unless a checkpoint is retained.`)) return;
    showResult(actionResult, "pending", "Cancelling…");
    try {
      const answer = await api(jobPath(jobId, "/cancel"), { method: "POST" });
      showResult(actionResult, "ok", `Cancel requested; the job is ${answer.status}.`);
    } catch (e) {
      showResult(actionResult, "error", e.message);
    }
  }

  // Sections
  const bottleneck = h("section", { id: "bottleneck", class: "verdict", "data-state": "loading" }, "Looking for a bottleneck…");
  const graphHolder = h("div", { class: "graph-scroll", id: "graph-holder" }, h("p", { class: "muted" }, "Loading the plan…"));
  const vertices = table("vertices", "Vertices", [["Vertex"], ["Operator"], ["Parallelism", true], ["Records in/s", true],
    ["Records out/s", true], ["Bytes in/s", true], ["Bytes out/s", true], ["Busy", true], ["Back-pressured", true],
    ["Watermark", true], ["Watermark lag", true]]);
  const subtasksTitle = h("h3", { id: "subtasks-title" }, "Subtasks");
  const subtasksNote = h("p", { class: "muted", id: "subtasks-note" });
  const subtasks = table("subtasks", "Subtasks", [["Subtask", true], ["TaskManager"], ["State"], ["Records in", true],
    ["Records out", true], ["In/s", true], ["Out/s", true], ["Busy", true], ["Back-pressured", true], ["Idle", true], ["Watermark", true]]);
  const subtasksSection = h("section", { id: "subtasks-section", hidden: true, "aria-labelledby": "subtasks-title" },
    subtasksTitle, subtasksNote, h("div", { class: "scroll" }, subtasks.el));

  const checkpointCounts = h("p", { id: "checkpoint-counts" });
  const checkpointChart = h("div", { id: "checkpoint-chart-holder", class: "chart" });
  const checkpoints = table("checkpoints", "Checkpoint history", [["Id", true], ["Kind"], ["Status"], ["Attempt", true],
    ["Triggered"], ["Duration", true], ["Size", true], ["Alignment", true], ["Location or failure"]]);
  const checkpointDetail = h("div", { id: "checkpoint-detail", hidden: true });
  const timeline = h("ol", { id: "timeline", class: "timeline" });
  const timelineNote = h("p", { id: "timeline-note", class: "muted" });

  root.append(
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Jobs"), " / ", h("span", { class: "mono" }, jobId)),
    h("div", { class: "job-head" }, h("div", {}, title, status), actions),
    actionResult, reason, facts,
    bottleneck,
    h("section", { "aria-labelledby": "graph-title" }, h("h2", { id: "graph-title" }, "Graph"),
      h("p", { class: "muted" }, "Vertices left to right by depth; a box is a chain (one task). Select a vertex for its subtasks."),
      graphHolder, graphLegend()),
    h("section", { "aria-labelledby": "vertices-title" }, h("h2", { id: "vertices-title" }, "Vertices"),
      h("div", { class: "scroll" }, vertices.el), subtasksSection),
    h("section", { "aria-labelledby": "checkpoints-title" }, h("h2", { id: "checkpoints-title" }, "Checkpoints"),
      checkpointCounts, checkpointChart, h("div", { class: "scroll" }, checkpoints.el), checkpointDetail),
    h("section", { "aria-labelledby": "timeline-title" }, h("h2", { id: "timeline-title" }, "Failures and recoveries"),
      timelineNote, timeline));

  function selectVertex(vertexId) {
    state.selectedVertex = state.selectedVertex === vertexId ? null : vertexId;
    if (state.graph) state.graph.select(state.selectedVertex);
    subtasksSection.hidden = state.selectedVertex === null;
    subtasks.body.replaceChildren();
    if (state.selectedVertex !== null) {
      subtasksTitle.textContent = `Subtasks of ${state.selectedVertex}`;
      subtasksNote.textContent = "Loading…";
      refreshSubtasks().catch(e => { subtasksNote.textContent = e.message; });
    }
  }

  async function refreshSubtasks() {
    const vertexId = state.selectedVertex;
    if (vertexId === null) return;
    const answer = await apiOptional(jobPath(jobId, `/vertices/${encodeURIComponent(vertexId)}`));
    if (state.selectedVertex !== vertexId) return;
    renderSubtasks(answer, state.details);
  }

  function renderSubtasks(answer, details) {
    if (answer.missing) {
      subtasksNote.textContent = `This JobManager has no per-subtask view (${answer.missing}).`;
      return;
    }
    const skew = details && details.bottleneck && details.bottleneck.vertex_id === answer.vertex_id ? details.bottleneck.skew : null;
    subtasksNote.textContent = `${answer.operator} · parallelism ${answer.parallelism} · chain ${answer.chain ?? DASH} · ` +
      `watermark ${formatWatermark(answer.watermark_ms)}`;
    syncRows(subtasks.body, answer.subtasks, t => t.subtask, t => [
      { content: String(t.subtask), class: "num" },
      { content: t.task_manager_id ?? DASH, class: "mono" },
      t.state ? statusBadge(String(t.state).replace(/^TASK_/, "")) : DASH,
      { content: formatCount(t.records_in), class: "num" },
      { content: formatCount(t.records_out), class: "num" },
      { content: formatRate(t.records_in_per_second), class: "num" },
      { content: formatRate(t.records_out_per_second), class: "num" },
      ratioCell(t.busy_ratio),
      ratioCell(t.backpressured_ratio),
      { content: formatPercent(t.idle_ratio), class: "num" },
      { content: formatWatermark(t.watermark_ms), class: "num" },
    ], t => ({ "data-subtask": t.subtask, "data-skewed": skew && skew.subtask === t.subtask ? "true" : null }));
  }

  async function refreshSavepoint() {
    const followed = state.savepoint;
    if (!followed) return;
    const answer = await api(jobPath(jobId, `/savepoints/${encodeURIComponent(followed.triggerId)}`));
    const what = followed.stop ? "Stop with savepoint" : "Savepoint";
    if (answer.status === "COMPLETED") {
      showResult(actionResult, "ok", `${what} ${answer.trigger_id} completed: ${answer.location}`);
      state.savepoint = null;
    } else if (answer.status === "FAILED") {
      showResult(actionResult, "error", `${what} ${answer.trigger_id} failed: ${answer.failure ?? "no reason given"}`);
      state.savepoint = null;
    } else {
      showResult(actionResult, "pending", `${what} ${answer.trigger_id}: ${answer.status} for ${formatDuration(Date.now() - answer.trigger_time)}`);
    }
    actionResult.dataset.triggerId = answer.trigger_id;
  }

  function showCheckpoint(id) {
    state.selectedCheckpoint = state.selectedCheckpoint === id ? null : id;
    state.checkpointSettled = false;
    checkpointDetail.hidden = state.selectedCheckpoint === null;
    if (state.selectedCheckpoint === null) return;
    checkpointDetail.replaceChildren(h("p", { class: "muted" }, `Loading checkpoint ${id}…`));
    refreshCheckpoint();
  }

  /** Loads the selected checkpoint's acknowledgements; again at every refresh until it has completed or failed. */
  async function refreshCheckpoint() {
    const id = state.selectedCheckpoint;
    if (id === null || state.checkpointSettled) return;
    try {
      const answer = await apiOptional(jobPath(jobId, `/checkpoints/${id}`));
      if (state.selectedCheckpoint !== id) return;
      state.checkpointSettled = Boolean(answer.missing) || (answer.status !== undefined && answer.status !== "IN_PROGRESS");
      replaceContent(checkpointDetail, ...renderCheckpointDetail(id, answer));
    } catch (e) {
      checkpointDetail.replaceChildren(h("p", { class: "result", "data-state": "error", role: "alert" }, e.message));
    }
  }

  return {
    async refresh() {
      const [details, checkpointAnswer, exceptions] = await Promise.all([
        api(jobPath(jobId)),
        api(jobPath(jobId, "/checkpoints")),
        apiOptional(jobPath(jobId, "/exceptions")),
        state.plan || state.planMissing ? null : apiOptional(jobPath(jobId, "/plan")).then(plan => {
          state.plan = plan.missing ? null : plan;
          state.planMissing = plan.missing;
        }),
      ]);
      state.details = details;
      renderHeader(details);
      const plan = state.plan || planFromDetails(details);
      if (!state.graph) {
        state.graph = buildGraph(plan, selectVertex);
        graphHolder.replaceChildren(state.graph.svg);
      }
      state.graph.update(details);
      state.graph.select(state.selectedVertex);
      renderBottleneck(bottleneck, details);
      renderVertices(vertices.body, details, plan, selectVertex);
      renderCheckpoints(checkpointAnswer, checkpointCounts, checkpointChart, checkpoints.body, showCheckpoint);
      renderTimeline(timeline, timelineNote, exceptions, details);
      await Promise.all([
        refreshSubtasks().catch(e => { subtasksNote.textContent = e.message; }),
        refreshSavepoint().catch(e => showResult(actionResult, "error", e.message)),
        refreshCheckpoint(),
      ]);
    },
  };

  function renderHeader(details) {
    document.title = `${details.name} · Sluice`;
    title.textContent = details.name;
    status.replaceChildren(statusBadge(details.status, "job-status"));
    const ended = TERMINAL_STATES.has(details.status);
    for (const id of ["action-savepoint", "action-stop", "action-cancel"]) document.getElementById(id).disabled = ended;
    const duration = details.duration_ms ?? ((details.end_time || Date.now()) - details.start_time);
    const fact = (key, label, value) => h("div", { "data-fact": key }, h("dt", {}, label), h("dd", {}, value));
    replaceContent(facts,
      fact("job-id", "Job id", h("span", { class: "mono" }, details.job_id)),
      fact("attempt", "Attempt", String(details.attempt)),
      fact("started", "Started", formatTime(details.start_time)),
      fact("duration", "Duration", formatDuration(duration)),
      fact("restarts", "Restarts", String(details.restarts ?? 0)),
      details.last_recovery_ms != null ? fact("last-recovery", "Last recovery", formatDuration(details.last_recovery_ms)) : null,
      details.relocations ? fact("relocations", "Moves", `${details.relocations} (last stall ${formatDuration(details.last_relocation_ms)})`) : null,
      details.restored_from ? fact("restored-from", "Restored from", h("span", { class: "mono" }, `#${details.restored_checkpoint} ${details.restored_from}`)) : null);
    reason.hidden = !details.status_reason;
    reason.textContent = details.status_reason || "";
  }
}

/** The plan's shape built from `GET /jobs/{id}` for a JobManager without `GET /jobs/{id}/plan`. */
function planFromDetails(details) {
  const graph = details.graph || {};
  const chainOf = new Map();
  for (const chain of details.chains || []) for (const id of chain.vertex_ids) chainOf.set(id, chain.index);
  const parallelism = new Map((details.vertices || []).map(v => [v.id, v.parallelism]));
  const edges = (graph.edges || []).map(e => ({
    from: e.from,
    to: e.to,
    partitioning: e.partitioning || (parallelism.get(e.from) === parallelism.get(e.to) ? "FORWARD" : "REBALANCE"),
    side_output: e.side_output || null,
    chained: chainOf.has(e.from) && chainOf.get(e.from) === chainOf.get(e.to),
  }));
  const vertices = (details.vertices || []).map(v => ({
    id: v.id,
    operator: v.operator,
    parallelism: v.parallelism,
    chain: chainOf.get(v.id) ?? null,
    inputs: edges.filter(e => e.to === v.id).map(e => e.from),
  }));
  return { job_id: details.job_id, name: details.name, vertices, edges, chains: details.chains || [] };
}

// ---------------------------------------------------------------------------------------------------------------
// The job graph: a layered layout (columns by depth, a chain's vertices side by side on one row inside its box).

const NODE_WIDTH = 236;
const NODE_HEIGHT = 100;
const COLUMN_GAP = 70;
const ROW_GAP = 28;
const CHAIN_PADDING = 8;
const CHAIN_HEADER = 20;
const GRAPH_MARGIN = 12;

/**
 * Where each vertex and chain goes. Depth is the longest path from a source (so every edge points right); each
 * chain (or lone vertex) takes one row over the columns of its vertices, the free row nearest the mean row of its
 * inputs, placed in order of depth so that inputs are placed first.
 */
function layoutPlan(plan) {
  const byId = new Map(plan.vertices.map(v => [v.id, v]));
  const inputs = new Map(plan.vertices.map(v => [v.id, []]));
  for (const edge of plan.edges) if (inputs.has(edge.to) && byId.has(edge.from)) inputs.get(edge.to).push(edge.from);
  const depth = new Map();
  const depthOf = (id, visiting = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (visiting.has(id)) return 0; // a cycle cannot pass validation; stay finite regardless
    visiting.add(id);
    const d = inputs.get(id).reduce((max, from) => Math.max(max, depthOf(from, visiting) + 1), 0);
    depth.set(id, d);
    return d;
  };
  plan.vertices.forEach(v => depthOf(v.id));

  // Groups: the plan's chains (in vertex order of depth), plus a group for any vertex no chain names.
  const groups = [];
  const grouped = new Set();
  for (const chain of plan.chains || []) {
    const ids = chain.vertex_ids.filter(id => byId.has(id) && !grouped.has(id)).sort((a, b) => depth.get(a) - depth.get(b));
    if (ids.length === 0) continue;
    ids.forEach(id => grouped.add(id));
    groups.push({ index: chain.index, parallelism: chain.parallelism, ids });
  }
  for (const v of plan.vertices) if (!grouped.has(v.id)) groups.push({ index: null, parallelism: v.parallelism, ids: [v.id] });
  for (const g of groups) {
    g.first = Math.min(...g.ids.map(id => depth.get(id)));
    g.last = Math.max(...g.ids.map(id => depth.get(id)));
  }

  const rowOf = new Map();
  const taken = []; // taken[row] = [[first, last], ...]
  const free = (row, g) => !(taken[row] || []).some(([a, b]) => a <= g.last && g.first <= b);
  for (const g of [...groups].sort((a, b) => a.first - b.first)) {
    const feeding = g.ids.flatMap(id => inputs.get(id)).filter(id => rowOf.has(id) && !g.ids.includes(id));
    const wanted = feeding.length ? Math.round(feeding.reduce((sum, id) => sum + rowOf.get(id), 0) / feeding.length) : 0;
    let row = wanted;
    for (let step = 0; !free(row, g); step += 1) {
      row = step % 2 === 0 ? wanted + step / 2 + 1 : Math.max(0, wanted - (step + 1) / 2);
      if (step > 4 * groups.length) {
        row = taken.length; // a fresh row is always free
        break;
      }
    }
    (taken[row] = taken[row] || []).push([g.first, g.last]);
    g.row = row;
    g.ids.forEach(id => rowOf.set(id, row));
  }

  const columnX = d => GRAPH_MARGIN + CHAIN_PADDING + d * (NODE_WIDTH + COLUMN_GAP);
  const rowHeight = CHAIN_HEADER + NODE_HEIGHT + 2 * CHAIN_PADDING + ROW_GAP;
  const rowY = r => GRAPH_MARGIN + r * rowHeight;
  const nodes = new Map(plan.vertices.map(v => [v.id, { x: columnX(depth.get(v.id)), y: rowY(rowOf.get(v.id)) + CHAIN_HEADER + CHAIN_PADDING, vertex: v }]));
  const boxes = groups.map(g => ({
    group: g,
    x: columnX(g.first) - CHAIN_PADDING,
    y: rowY(g.row),
    width: (g.last - g.first) * (NODE_WIDTH + COLUMN_GAP) + NODE_WIDTH + 2 * CHAIN_PADDING,
    height: CHAIN_HEADER + NODE_HEIGHT + 2 * CHAIN_PADDING,
  }));
  const columns = Math.max(0, ...depth.values()) + 1;
  const rows = Math.max(0, ...groups.map(g => g.row)) + 1;
  return {
    nodes,
    boxes,
    width: 2 * GRAPH_MARGIN + columns * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP + 2 * CHAIN_PADDING,
    height: 2 * GRAPH_MARGIN + rows * rowHeight - ROW_GAP,
  };
}

/** Shortens a label to fit a node, keeping its start. */
const fit = (text, max) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/**
 * Builds the SVG once for a plan; update(details) then sets each vertex's figures and colour in place (so the
 * focused vertex stays focused), select(id) marks the selected one.
 */
function buildGraph(plan, onSelect) {
  const layout = layoutPlan(plan);
  const svg = s("svg", {
    id: "job-graph",
    class: "graph",
    viewBox: `0 0 ${layout.width} ${layout.height}`,
    width: layout.width,
    height: layout.height,
    role: "group",
    "aria-label": `Job graph: ${plan.vertices.length} vertices in ${layout.boxes.length} tasks`,
  });
  svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-head" }))));

  for (const box of layout.boxes) {
    const g = box.group;
    const label = g.index === null ? `×${g.parallelism}` : `task ${g.index} · parallelism ${g.parallelism}`;
    svg.append(s("g", { class: "chain", "data-chain": g.index ?? "" },
      s("rect", { x: box.x, y: box.y, width: box.width, height: box.height, rx: 8, class: "chain-box" }),
      s("text", { x: box.x + 8, y: box.y + 14, class: "chain-label" }, label)));
  }

  for (const edge of plan.edges) {
    const from = layout.nodes.get(edge.from);
    const to = layout.nodes.get(edge.to);
    if (!from || !to) continue;
    const x1 = from.x + NODE_WIDTH;
    const y1 = from.y + NODE_HEIGHT / 2;
    const x2 = to.x;
    const y2 = to.y + NODE_HEIGHT / 2;
    const bend = Math.max(24, (x2 - x1) / 2);
    const partitioning = edge.partitioning || "FORWARD";
    const label = edge.side_output ? `${partitioning} · ${edge.side_output}` : partitioning;
    svg.append(s("g", { class: `edge${edge.chained ? " chained" : ""}${edge.side_output ? " side-output" : ""}`, "data-edge": `${edge.from}->${edge.to}`, "data-partitioning": partitioning },
      s("title", {}, `${edge.from} → ${edge.to}: ${label}${edge.chained ? " (chained: a direct call)" : ""}`),
      s("path", { d: `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`, "marker-end": "url(#arrow)" }),
      edge.chained ? null : s("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 6, class: "edge-label", "text-anchor": "middle" }, label)));
  }

  const nodes = new Map();
  for (const [id, place] of layout.nodes) {
    const v = place.vertex;
    const line = (n, cls) => s("text", { x: place.x + 10, y: place.y + 20 + n * 17, class: cls });
    const title = s("title", {}, id);
    const texts = { name: line(0, "vertex-name"), operator: line(1, "vertex-line"), input: line(2, "vertex-line"), output: line(3, "vertex-line"), load: line(4, "vertex-line") };
    texts.name.textContent = fit(id, 28);
    texts.operator.textContent = `${v.operator} · parallelism ${v.parallelism}`;
    const g = s("g", {
      class: "vertex level-unknown",
      "data-vertex": id,
      "data-level": "UNKNOWN",
      "data-busy-level": "UNKNOWN",
      tabindex: 0,
      role: "button",
      "aria-pressed": "false",
    }, title, s("rect", { x: place.x, y: place.y, width: NODE_WIDTH, height: NODE_HEIGHT, rx: 6, class: "vertex-box" }), Object.values(texts));
    g.addEventListener("click", () => onSelect(id));
    g.addEventListener("keydown", event => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        onSelect(id);
      }
    });
    nodes.set(id, { g, title, texts });
    svg.append(g);
  }

  return {
    svg,
    update(details) {
      for (const v of details.vertices || []) {
        const node = nodes.get(v.id);
        if (!node) continue;
        const busy = levelOf(v.busy_level, v.busy_ratio);
        const pressured = levelOf(v.backpressure_level, v.backpressured_ratio);
        const colour = vertexColour(busy, pressured, v.busy_ratio, v.backpressured_ratio);
        node.g.setAttribute("class", `vertex ${colour}${node.g.classList.contains("selected") ? " selected" : ""}`);
        node.g.setAttribute("data-level", pressured);
        node.g.setAttribute("data-busy-level", busy);
        node.texts.input.textContent = `in ${formatRate(v.records_in_per_second)} · ${formatByteRate(v.bytes_in_per_second)}`;
        node.texts.output.textContent = `out ${formatRate(v.records_out_per_second)} · ${formatByteRate(v.bytes_out_per_second)}`;
        node.texts.load.textContent = `busy ${formatPercent(v.busy_ratio)} · back-pressured ${formatPercent(v.backpressured_ratio)}`;
        const summary = `${v.id} (${v.operator}, parallelism ${v.parallelism}): busy ${formatPercent(v.busy_ratio)} ${busy}, ` +
          `back-pressured ${formatPercent(v.backpressured_ratio)} ${pressured}; records in ${formatRate(v.records_in_per_second)}, ` +
          `out ${formatRate(v.records_out_per_second)}; watermark ${formatWatermark(v.watermark_ms)}`;
        node.title.textContent = summary;
        node.g.setAttribute("aria-label", summary);
      }
    },
    select(id) {
      for (const [vertexId, node] of nodes) {
        node.g.classList.toggle("selected", vertexId === id);
        node.g.setAttribute("aria-pressed", String(vertexId === id));
      }
    },
  };
}

/**
 * The colour class of a vertex, as in Flink: a back-pressured vertex is grey to black, a busy one orange to red,
 * one that is neither blue. When both are raised, the larger ratio decides.
 */
function vertexColour(busy, pressured, busyRatio, pressuredRatio) {
  if (busy === "UNKNOWN" && pressured === "UNKNOWN") return "level-unknown";
  const rank = { UNKNOWN: 0, OK: 0, LOW: 1, HIGH: 2 };
  if (rank[busy] === 0 && rank[pressured] === 0) return "level-ok";
  const pressuredWins = rank[pressured] > rank[busy] || (rank[pressured] === rank[busy] && (pressuredRatio || 0) >= (busyRatio || 0));
  return pressuredWins ? `backpressured-${pressured.toLowerCase()}` : `busy-${busy.toLowerCase()}`;
}

function graphLegend() {
  const item = (cls, text) => h("li", {}, h("span", { class: `swatch ${cls}`, "aria-hidden": "true" }), text);
  return h("ul", { class: "legend", "aria-label": "Colours of the graph" },
    item("level-ok", "OK: busy and back-pressured ≤ 10 %"),
    item("busy-low", "busy LOW (≤ 50 %)"),
    item("busy-high", "busy HIGH (> 50 %)"),
    item("backpressured-low", "back-pressured LOW (≤ 50 %)"),
    item("backpressured-high", "back-pressured HIGH (> 50 %)"),
    item("level-unknown", "no figures"));
}

// ---------------------------------------------------------------------------------------------------------------
// Bottleneck verdict and vertex table

function renderBottleneck(el, details) {
  const verdict = details.bottleneck;
  const heading = h("h2", {}, "Bottleneck");
  if (verdict === undefined) {
    el.dataset.state = "unknown";
    delete el.dataset.vertexId;
    el.replaceChildren(heading, h("p", { class: "muted" }, "This JobManager does not analyse bottlenecks (it sends no verdict)."));
    return;
  }
  if (verdict === null) {
    el.dataset.state = "none";
    delete el.dataset.vertexId;
    el.replaceChildren(heading, h("p", {}, TERMINAL_STATES.has(details.status)
      ? "The job has ended."
      : "None: no vertex is busy while the vertices upstream of it are back-pressured."));
    return;
  }
  el.dataset.state = "found";
  el.dataset.vertexId = verdict.vertex_id;
  const skew = verdict.skew;
  replaceContent(el, heading,
    h("p", { class: "verdict-main" }, h("strong", { id: "bottleneck-vertex" }, verdict.vertex_id),
      Array.isArray(verdict.vertex_ids) && verdict.vertex_ids.length > 1 ? ` (its task runs ${verdict.vertex_ids.join(" → ")})` : "",
      ` · busy ${formatPercent(verdict.busy_ratio)}`),
    h("p", { id: "bottleneck-reason" }, verdict.reason),
    skew ? h("p", { id: "bottleneck-skew", "data-subtask": skew.subtask },
      `Key skew: subtask ${skew.subtask} reads ${formatRate(skew.records_in_per_second)}, ` +
      `${isNumber(skew.ratio) ? skew.ratio.toFixed(1) : DASH}× the mean of its vertex (${formatRate(skew.mean_records_in_per_second)}).`) : null);
}

function renderVertices(body, details, plan, onSelect) {
  const chainOf = new Map(plan.vertices.map(v => [v.id, v.chain]));
  syncRows(body, details.vertices || [], v => v.id, v => [
    h("button", { type: "button", class: "link", "data-select-vertex": v.id, onclick: () => onSelect(v.id) }, v.id),
    v.operator,
    { content: String(v.parallelism), class: "num" },
    { content: formatRate(v.records_in_per_second), class: "num" },
    { content: formatRate(v.records_out_per_second), class: "num" },
    { content: formatByteRate(v.bytes_in_per_second), class: "num" },
    { content: formatByteRate(v.bytes_out_per_second), class: "num" },
    ratioCell(v.busy_ratio, v.busy_level),
    ratioCell(v.backpressured_ratio, v.backpressure_level),
    { content: formatWatermark(v.watermark_ms), class: "num" },
    { content: formatDuration(v.watermark_lag_ms), class: "num" },
  ], v => ({
    "data-vertex-id": v.id,
    "data-chain": v.chain ?? chainOf.get(v.id) ?? null,
    "data-level": levelOf(v.backpressure_level, v.backpressured_ratio),
    "data-busy-level": levelOf(v.busy_level, v.busy_ratio),
  }));
}

// ---------------------------------------------------------------------------------------------------------------
// Checkpoints: counts, a duration chart, the history, and one checkpoint's per-task acknowledgements.

function checkpointDuration(c, now) {
  if (isNumber(c.duration_ms)) return c.duration_ms;
  return c.status === "IN_PROGRESS" && isNumber(c.trigger_time) ? Math.max(0, now - c.trigger_time) : null;
}

function renderCheckpoints(answer, counts, chartHolder, body, onShow) {
  const c = answer.counts || {};
  counts.textContent = `${c.completed ?? 0} completed · ${c.failed ?? 0} failed · ${c.in_progress ?? 0} in progress` +
    (answer.latest && answer.latest.completed ? ` · latest completed #${answer.latest.completed.id} at ${formatTime(answer.latest.completed.end_time)}` : "");
  const history = answer.history || [];
  const now = Date.now();
  chartHolder.replaceChildren(checkpointChart(history.slice(0, CHART_CHECKPOINTS_MAX).reverse(), now));
  if (history.length === 0) {
    placeholderRow(body, 9, "No checkpoint yet.");
    return;
  }
  // The newest rows, and every savepoint however old (the history may list a hundred checkpoints).
  const shown = history.filter((cp, i) => i < CHECKPOINT_ROWS_SHOWN || cp.kind === "SAVEPOINT");
  counts.textContent += shown.length < history.length ? ` · the table shows the newest ${CHECKPOINT_ROWS_SHOWN} and every savepoint` : "";
  syncRows(body, shown, cp => cp.id, cp => [
    { content: h("button", { type: "button", class: "link", "data-show-checkpoint": cp.id, onclick: () => onShow(cp.id) }, String(cp.id)), class: "num" },
    h("span", { class: `kind kind-${String(cp.kind).toLowerCase()}` }, cp.kind === "SAVEPOINT" ? "savepoint" : "checkpoint"),
    statusBadge(cp.status),
    { content: String(cp.attempt ?? DASH), class: "num" },
    { content: formatTime(cp.trigger_time), class: "nowrap" },
    { content: formatDuration(checkpointDuration(cp, now)), class: "num" },
    { content: formatBytes(cp.state_size_bytes), class: "num" },
    { content: formatDuration(cp.alignment_ms), class: "num" },
    { content: cp.failure ? cp.failure : cp.discarded ? `${cp.location} (discarded)` : cp.location ?? DASH, class: cp.failure ? "failure" : "mono small" },
  ], cp => ({ "data-checkpoint-id": cp.id, "data-kind": cp.kind, "data-status": cp.status }));
}

/** Bars of checkpoint durations, oldest left; savepoints outlined, failures red, ones in flight grey. */
function checkpointChart(history, now) {
  const width = 640;
  const height = 130;
  const left = 56;
  const bottom = 20;
  const top = 8;
  const plotWidth = width - left - 8;
  const plotHeight = height - top - bottom;
  const svg = s("svg", { id: "checkpoint-chart", class: "chart", viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": history.length ? `Durations of the last ${history.length} checkpoints` : "No checkpoint yet" });
  const durations = history.map(c => checkpointDuration(c, now) ?? 0);
  const max = Math.max(1, ...durations);
  const y = ms => top + plotHeight - (ms / max) * plotHeight;
  svg.append(
    s("line", { x1: left, y1: top + plotHeight, x2: left + plotWidth, y2: top + plotHeight, class: "axis" }),
    s("line", { x1: left, y1: top, x2: left, y2: top + plotHeight, class: "axis" }),
    s("text", { x: left - 6, y: top + 10, class: "axis-label", "text-anchor": "end" }, formatDuration(max)),
    s("text", { x: left - 6, y: top + plotHeight, class: "axis-label", "text-anchor": "end" }, "0"));
  if (history.length === 0) return svg;
  const slot = plotWidth / Math.max(history.length, 10);
  const barWidth = Math.max(2, Math.min(24, slot - 3));
  history.forEach((c, i) => {
    const x = left + 2 + i * slot;
    const barTop = y(durations[i]);
    svg.append(s("rect", {
      x, y: barTop, width: barWidth, height: Math.max(1, top + plotHeight - barTop),
      class: `bar status-${String(c.status).toLowerCase()} kind-${String(c.kind).toLowerCase()}`,
      "data-checkpoint-id": c.id,
    }, s("title", {}, `#${c.id} ${c.kind === "SAVEPOINT" ? "savepoint" : "checkpoint"} ${c.status}: ${formatDuration(durations[i])}` +
      `, ${formatBytes(c.state_size_bytes)}, alignment ${formatDuration(c.alignment_ms)}`)));
  });
  const first = history[0];
  const last = history[history.length - 1];
  svg.append(s("text", { x: left + 2, y: height - 5, class: "axis-label" }, `#${first.id}`));
  if (last !== first) svg.append(s("text", { x: left + 2 + (history.length - 1) * slot + barWidth, y: height - 5, class: "axis-label", "text-anchor": "end" }, `#${last.id}`));
  return svg;
}

/** The acknowledgement fields shown first, in this order; any others the server sends follow. */
const ACK_COLUMNS = ["chain", "subtask", "vertex_ids", "state_size_bytes", "sync_ms", "async_ms", "alignment_ms", "file", "shared_files"];
const ACK_HEADINGS = { chain: "Task", subtask: "Subtask", vertex_ids: "Vertices", state_size_bytes: "State size", sync_ms: "Sync",
  async_ms: "Async", alignment_ms: "Alignment", file: "File", shared_files: "Shared files" };

function renderCheckpointDetail(id, answer) {
  if (answer.missing) {
    return [h("h3", {}, `Checkpoint ${id}`), h("p", { class: "muted" }, `This JobManager has no per-checkpoint view (${answer.missing}).`)];
  }
  const heading = h("h3", {}, `${answer.kind === "SAVEPOINT" ? "Savepoint" : "Checkpoint"} ${id}: ${answer.status ?? ""}`);
  const summary = h("p", { class: "muted" }, `sync ${formatDuration(answer.sync_ms)} · async ${formatDuration(answer.async_ms)} · ` +
    `alignment ${formatDuration(answer.alignment_ms)} · ${formatBytes(answer.state_size_bytes)}`);
  const tasks = Array.isArray(answer.tasks) ? answer.tasks : [];
  if (tasks.length === 0) return [heading, summary, h("p", { class: "muted" }, "No task has acknowledged it yet.")];
  const keys = new Set(tasks.flatMap(task => Object.keys(task)));
  const columns = [...ACK_COLUMNS.filter(c => keys.has(c)), ...[...keys].filter(c => !ACK_COLUMNS.includes(c)).sort()];
  const format = (key, value) => {
    if (value === null || value === undefined) return DASH;
    if (Array.isArray(value)) return value.join(", ");
    if (typeof value !== "number") return typeof value === "object" ? JSON.stringify(value) : String(value);
    if (key.endsWith("time_ms") || key.endsWith("_time")) return formatTime(value);
    if (key.endsWith("_ms")) return formatDuration(value);
    if (key.endsWith("_bytes")) return formatBytes(value);
    return String(value);
  };
  const numeric = key => tasks.some(task => typeof task[key] === "number");
  return [heading, summary, h("div", { class: "scroll" }, h("table", { class: "data", id: "checkpoint-tasks" },
    h("caption", { class: "visually-hidden" }, `Acknowledgements of checkpoint ${id}`),
    h("thead", {}, h("tr", {}, columns.map(c => h("th", { scope: "col", class: numeric(c) ? "num" : null }, ACK_HEADINGS[c] ?? c.replaceAll("_", " "))))),
    h("tbody", {}, tasks.map(task => h("tr", { "data-chain": task.chain, "data-subtask": task.subtask },
      columns.map(c => h("td", { class: numeric(c) ? "num" : null }, format(c, task[c])))))))) ];
}

// ---------------------------------------------------------------------------------------------------------------
// Failure and recovery timeline

const RECOVERY_PHASES = [
  ["detection_ms", "detection", "failure → noticed"],
  ["cancel_ms", "cancel", "old tasks stopped"],
  ["scheduling_ms", "scheduling", "slots taken, tasks deployed"],
  ["restore_ms", "restore", "state restored, tasks running"],
  ["catch_up_ms", "catch-up", "back to the input's head"],
];

function renderTimeline(list, note, answer, details) {
  if (answer.missing) {
    note.textContent = `This JobManager keeps no exception history (${answer.missing}). ` +
      (details.restarts ? `The job restarted ${details.restarts} time(s); last cause: ${details.failure_cause ?? DASH}; ` +
        `last recovery ${formatDuration(details.last_recovery_ms)}.` : "The job has not restarted.");
    list.replaceChildren();
    return;
  }
  const entries = answer.exceptions || [];
  note.textContent = entries.length ? "Newest first. Each restart shows how long each phase of its recovery took." : "No failure so far.";
  const key = e => `${e.attempt}:${e.time_ms}`;
  const existing = new Map([...list.children].map(li => [li.dataset.key, li]));
  const items = entries.map(e => {
    const rendered = timelineEntry(e);
    const old = existing.get(key(e));
    // Redraw an entry only when it changed (catch-up completes later); keeps the page still otherwise.
    if (old && old.dataset.text === rendered.textContent) return old;
    rendered.dataset.key = key(e);
    rendered.dataset.text = rendered.textContent;
    return rendered;
  });
  list.replaceChildren(...items);
}

function timelineEntry(e) {
  const recovery = e.recovery;
  const li = h("li", { class: "timeline-entry", "data-attempt": e.attempt, "data-restarted": String(Boolean(e.restarted)) },
    h("div", { class: "timeline-head" },
      h("time", { datetime: isNumber(e.time_ms) ? new Date(e.time_ms).toISOString() : null }, formatTime(e.time_ms)),
      h("span", { class: "badge" }, `attempt ${e.attempt}`),
      e.restarted ? h("span", { class: "badge status-restarting" }, "restarted") : h("span", { class: "badge status-failed" }, "not restarted")),
    h("p", { class: "cause", "data-cause": "" }, e.cause),
    h("p", { class: "muted" }, `task ${e.task ?? DASH} · TaskManager ${e.task_manager_id ?? DASH}`));
  if (recovery) li.append(recoveryView(recovery));
  return li;
}

function recoveryView(recovery) {
  const width = 480;
  const phases = RECOVERY_PHASES.map(([key, name, meaning]) => ({ key, name, meaning, ms: recovery[key] }));
  const known = phases.filter(p => isNumber(p.ms));
  const total = known.reduce((sum, p) => sum + p.ms, 0);
  const bar = s("svg", { class: "phases", viewBox: `0 0 ${width} 16`, width, height: 16, role: "img",
    "aria-label": `Recovery took ${formatDuration(recovery.total_ms)}` });
  let x = 0;
  for (const p of known) {
    const w = total > 0 ? (p.ms / total) * width : 0;
    bar.append(s("rect", { x, y: 0, width: Math.max(w, p.ms > 0 ? 1 : 0), height: 16, class: `phase phase-${p.key}` },
      s("title", {}, `${p.name}: ${formatDuration(p.ms)}`)));
    x += w;
  }
  const list = h("dl", { class: "phase-list" }, phases.map(p => h("div", { "data-phase": p.name },
    h("dt", {}, h("span", { class: `swatch phase-${p.key}`, "aria-hidden": "true" }), p.name),
    h("dd", { title: p.meaning }, isNumber(p.ms) ? formatDuration(p.ms) : p.key === "catch_up_ms" ? "catching up…" : DASH))),
    h("div", { "data-phase": "total" }, h("dt", {}, "total"), h("dd", {}, formatDuration(recovery.total_ms))));
  return h("div", { class: "recovery" }, bar, list);
}

// ---------------------------------------------------------------------------------------------------------------

if (!location.hash) history.replaceState(null, "", "#/");
route();
