// The job page (#/jobs/<id>): its header and actions, and the sections composed from the modules below: the
// bottleneck and vertex tables (vertices.js), the graph (graph.js), checkpoints (checkpoints.js) and the failure
// and recovery timeline (timeline.js).
import { api, apiOptional, jobPath } from "./api.js";
import { renderCheckpointDetail, renderCheckpoints } from "./checkpoints.js";
import { h, replaceContent, showResult, table } from "./dom.js";
import { formatDuration, formatTime } from "./format.js";
import { buildGraph, graphLegend } from "./graph.js";
import { statusBadge, TERMINAL_STATES } from "./status.js";
import { renderTimeline } from "./timeline.js";
import { renderBottleneck, renderSubtasks, renderVertices } from "./vertices.js";

export function jobPage(root, jobId) {
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
    renderSubtasks(subtasks.body, subtasksNote, answer, state.details);
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
