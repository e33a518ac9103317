// The Sluice web UI: plain modern JavaScript, no framework and no build step (see docs/ui.md).
//
// Three pages behind hash routes (#/, #/jobs/<id>, #/taskmanagers), each refreshed every POLL_INTERVAL_MS while
// the tab is visible, from the JobManager's REST API. Every element a test selects has a stable id or data-*
// attribute. Server text is only ever put in the page through textContent or attributes (never innerHTML), and
// the page's Content-Security-Policy forbids inline scripts and style attributes: styling is by class, and
// charts are SVG whose geometry is set through attributes.
//
// This file is the entry point (a module, loaded by index.html): the session (the token form), routing and polling.
// The pages and their parts are modules of their own, imported relative to /ui/:
//   api.js           the REST API: fetch with the token, errors
//   dom.js           element helpers: h() and s(), tables kept row by row, action results
//   format.js        numbers, rates, bytes, durations, times
//   status.js        job states, busy and back-pressure levels, and their badges
//   overview.js      the overview page (#/)
//   taskmanagers.js  the TaskManagers page (#/taskmanagers)
//   job.js           the job page (#/jobs/<id>), composed of:
//     vertices.js      the bottleneck verdict, the vertex table and a vertex's subtasks
//     graph.js         the job graph: its layout and SVG
//     checkpoints.js   checkpoint counts, duration chart, history and acknowledgements
//     timeline.js      failures and recoveries
import { ApiError, forgetToken, storedToken, storeToken } from "./api.js";
import { h } from "./dom.js";
import { jobPage } from "./job.js";
import { overviewPage } from "./overview.js";
import { taskManagersPage } from "./taskmanagers.js";

/** How often the visible page refreshes. */
const POLL_INTERVAL_MS = 1000;

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
  signedIn.hidden = !yes || !storedToken();
}

loginForm.addEventListener("submit", event => {
  event.preventDefault();
  storeToken(tokenInput.value.trim());
  tokenInput.value = "";
  route();
});

document.getElementById("sign-out").addEventListener("click", () => {
  forgetToken();
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
  if (hash === "#/" || hash === "#") page = overviewPage(view, () => page.refresh());
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

if (!location.hash) history.replaceState(null, "", "#/");
route();
