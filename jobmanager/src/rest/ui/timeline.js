// Failure and recovery timeline: the job's exceptions, newest first, each restart with the phases of its recovery.
import { h, s } from "./dom.js";
import { DASH, formatDuration, formatTime, isNumber } from "./format.js";

const RECOVERY_PHASES = [
  ["detection_ms", "detection", "failure → noticed"],
  ["cancel_ms", "cancel", "old tasks stopped"],
  ["scheduling_ms", "scheduling", "slots taken, tasks deployed"],
  ["restore_ms", "restore", "state restored, tasks running"],
  ["catch_up_ms", "catch-up", "back to the input's head"],
];

export function renderTimeline(list, note, answer, details) {
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

// What each kind of failure means (sluice_common::lifecycle::failure), shown on hover.
const FAILURE_KINDS = {
  INPUT: "Data the task was given cannot be processed: a record, a value, or stored state.",
  CONFIGURATION: "The job asks for something that cannot work; it is not restarted. Fix the job and submit it again.",
  IO: "Something outside the task failed: a file, checkpoint storage, Kafka, the network, a peer TaskManager.",
  INTERNAL: "A bug in Sluice: an invariant broke, or the task panicked.",
};

function timelineEntry(e) {
  const recovery = e.recovery;
  const li = h("li", { class: "timeline-entry", "data-attempt": e.attempt, "data-restarted": String(Boolean(e.restarted)) },
    h("div", { class: "timeline-head" },
      h("time", { datetime: isNumber(e.time_ms) ? new Date(e.time_ms).toISOString() : null }, formatTime(e.time_ms)),
      h("span", { class: "badge" }, `attempt ${e.attempt}`),
      e.restarted ? h("span", { class: "badge status-restarting" }, "restarted") : h("span", { class: "badge status-failed" }, "not restarted"),
      e.failure_kind ? h("span", { class: "badge", "data-failure-kind": e.failure_kind, title: FAILURE_KINDS[e.failure_kind] ?? "" },
        `${e.failure_kind.toLowerCase()} error`) : null),
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
