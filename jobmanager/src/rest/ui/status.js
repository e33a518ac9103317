// What a status or a load level means and how the page shows it: the job states after which nothing can be done,
// busy and back-pressure levels, and their badges.
import { h } from "./dom.js";
import { formatPercent, isNumber } from "./format.js";

/** Job states after which nothing can be done to the job. */
export const TERMINAL_STATES = new Set(["FINISHED", "FAILED", "CANCELED"]);
/** Flink's thresholds for busy and back-pressured time: OK up to 10 %, LOW up to 50 %, HIGH above. The server
 * sends the levels; these only classify a ratio the server sent without its level. */
const LEVEL_LOW_ABOVE = 0.1;
const LEVEL_HIGH_ABOVE = 0.5;

/** OK / LOW / HIGH as the server says, else from the ratio, else UNKNOWN (an older JobManager sends neither). */
export function levelOf(level, ratio) {
  if (level === "OK" || level === "LOW" || level === "HIGH") return level;
  if (!isNumber(ratio)) return "UNKNOWN";
  if (ratio > LEVEL_HIGH_ABOVE) return "HIGH";
  if (ratio > LEVEL_LOW_ABOVE) return "LOW";
  return "OK";
}

export function statusBadge(status, id) {
  return h("span", { id, class: `badge status-${String(status || "UNKNOWN").toLowerCase()}`, "data-status": status }, status || "UNKNOWN");
}

function levelBadge(level) {
  return h("span", { class: `badge level-${level.toLowerCase()}`, "data-level": level }, level === "UNKNOWN" ? "n/a" : level);
}

/** A ratio and its level, e.g. "87 % HIGH". */
export function ratioCell(ratio, level) {
  const lvl = levelOf(level, ratio);
  return { content: h("span", { class: "ratio" }, formatPercent(ratio), " ", levelBadge(lvl)), class: "num" };
}
