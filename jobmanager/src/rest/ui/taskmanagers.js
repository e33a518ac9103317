// The TaskManagers page (#/taskmanagers): every registered TaskManager, its slots, tasks, memory and heartbeat.
import { api } from "./api.js";
import { h, placeholderRow, syncRows, table } from "./dom.js";
import { DASH, formatBytes, formatDuration, formatPercent, isNumber } from "./format.js";
import { statusBadge } from "./status.js";

export function taskManagersPage(root) {
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
