// Checkpoints: counts, a duration chart, the history, and one checkpoint's per-task acknowledgements.
import { h, placeholderRow, s, syncRows } from "./dom.js";
import { DASH, formatBytes, formatDuration, formatTime, isNumber } from "./format.js";
import { statusBadge } from "./status.js";

/** Checkpoints drawn in the duration chart (the newest ones). */
const CHART_CHECKPOINTS_MAX = 60;
/** Rows of the checkpoint history table (savepoints are always shown). */
const CHECKPOINT_ROWS_SHOWN = 20;

function checkpointDuration(c, now) {
  if (isNumber(c.duration_ms)) return c.duration_ms;
  return c.status === "IN_PROGRESS" && isNumber(c.trigger_time) ? Math.max(0, now - c.trigger_time) : null;
}

export function renderCheckpoints(answer, counts, chartHolder, body, onShow) {
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

export function renderCheckpointDetail(id, answer) {
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
