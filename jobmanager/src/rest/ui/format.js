// Formatting of numbers, rates, bytes, durations and times for the page. Every function takes null/undefined and
// shows "–" for it.

export const DASH = "–";
export const isNumber = value => typeof value === "number" && Number.isFinite(value);

export function formatCount(n) {
  if (!isNumber(n)) return DASH;
  const abs = Math.abs(n);
  if (abs >= 1e9) return `${(n / 1e9).toFixed(1)} G`;
  if (abs >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
  if (abs >= 1e4) return `${(n / 1e3).toFixed(1)} k`;
  if (abs >= 100 || Number.isInteger(n)) return String(Math.round(n));
  return n.toFixed(1);
}

export const formatRate = n => (isNumber(n) ? `${formatCount(n)}/s` : DASH);

export function formatBytes(n) {
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

export const formatByteRate = n => (isNumber(n) ? `${formatBytes(n)}/s` : DASH);

export function formatDuration(ms) {
  if (!isNumber(ms)) return DASH;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const seconds = Math.floor(ms / 1000);
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86_400)} d ${Math.floor((seconds % 86_400) / 3600)} h`;
}

export function formatTime(ms) {
  if (!isNumber(ms) || ms <= 0) return DASH;
  const date = new Date(ms);
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay ? date.toLocaleTimeString() : date.toLocaleString();
}

/** A watermark: the time of day with milliseconds (watermarks move in small steps). */
export function formatWatermark(ms) {
  if (!isNumber(ms)) return DASH;
  const date = new Date(ms);
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  const time = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
  return date.toDateString() === new Date().toDateString() ? time : `${date.toLocaleDateString()} ${time}`;
}

export const formatPercent = ratio => (isNumber(ratio) ? `${Math.round(ratio * 100)} %` : DASH);
