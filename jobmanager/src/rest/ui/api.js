// The JobManager's REST API as the page calls it: every call carries the token this tab was given, and a failure
// becomes an ApiError carrying the server's own `error` text.

/** Where the token lives: this tab's sessionStorage, sent only in the Authorization header (never a cookie, so
 * pages of other sites cannot make the browser send it). */
const TOKEN_KEY = "sluice.token";

/** The token this tab signed in with, or null. */
export const storedToken = () => sessionStorage.getItem(TOKEN_KEY);
export const storeToken = token => sessionStorage.setItem(TOKEN_KEY, token);
export const forgetToken = () => sessionStorage.removeItem(TOKEN_KEY);

/** A failed API call; `message` is the server's `error` text as is, or what went wrong reaching it. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
  /** A route this JobManager does not serve (an older version): the page shows what it can without it. */
  get isMissingRoute() {
    return this.status === 404 && this.message.startsWith("no such route");
  }
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const token = storedToken();
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
export async function apiOptional(path) {
  try {
    return await api(path);
  } catch (e) {
    if (e instanceof ApiError && e.isMissingRoute) return { missing: e.message };
    throw e;
  }
}

export const jobPath = (jobId, rest = "") => `/jobs/${encodeURIComponent(jobId)}${rest}`;
