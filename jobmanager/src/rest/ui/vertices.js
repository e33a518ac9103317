// Where a job's load is: the bottleneck verdict, the vertex table, and one vertex's subtasks.
import { h, replaceContent, syncRows } from "./dom.js";
import { DASH, formatByteRate, formatCount, formatDuration, formatPercent, formatRate, formatWatermark, isNumber } from "./format.js";
import { levelOf, ratioCell, statusBadge, TERMINAL_STATES } from "./status.js";

export function renderBottleneck(el, details) {
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

export function renderVertices(body, details, plan, onSelect) {
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

/** One vertex's subtasks (the answer of `GET /jobs/{id}/vertices/{vertex}`) in `body`, a summary in `note`. */
export function renderSubtasks(body, note, answer, details) {
  if (answer.missing) {
    note.textContent = `This JobManager has no per-subtask view (${answer.missing}).`;
    return;
  }
  const skew = details && details.bottleneck && details.bottleneck.vertex_id === answer.vertex_id ? details.bottleneck.skew : null;
  note.textContent = `${answer.operator} · parallelism ${answer.parallelism} · chain ${answer.chain ?? DASH} · ` +
    `watermark ${formatWatermark(answer.watermark_ms)}`;
  syncRows(body, answer.subtasks, t => t.subtask, t => [
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
