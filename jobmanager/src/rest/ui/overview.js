// The overview page (#/): the cluster, job submission, the jobs.
import { api } from "./api.js";
import { h, placeholderRow, replaceContent, showResult, syncRows, table } from "./dom.js";
import { formatDuration, formatRate, formatTime } from "./format.js";
import { statusBadge } from "./status.js";

/**
 * The overview page in `root`. `refreshCurrentPage()` refreshes the page shown now (this one, unless the user has
 * moved on): a submitted job shows at once rather than at the next poll.
 */
export function overviewPage(root, refreshCurrentPage) {
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
      refreshCurrentPage().catch(() => {});
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
