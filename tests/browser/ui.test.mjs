// The web UI does what an operator needs, in a real browser (issue 22).
//
// Goal: everything the job page promises is checked the way a person would see it: log in with the token,
// submit a job file through the page, watch its records/s move, see its graph with every vertex, see the slow
// sink's upstream turn HIGH (back-pressured) and the bottleneck verdict name the sink, trigger a savepoint and find
// it in the checkpoint history, kill -9 a TaskManager running the job and find the restart in the failure and
// recovery timeline, see the TaskManager LOST on the TaskManagers page, and cancel the job from the page.
//
// Method: scripts/browser-check.sh starts a local cluster (one JobManager with a short heartbeat timeout, two
// TaskManagers) and runs this file with node's test runner; Debian's Chromium is driven by playwright-core
// (headless, never a downloaded browser). Each step waits by polling with a deadline and reports the last thing it
// saw; the steps run in order and a failed step skips the rest (SLUICE_BROWSER_KEEP_GOING=1: runs them all). On failure the page's screenshot, HTML and console
// go to SLUICE_ARTIFACTS_DIR. The page must also raise no script error and no Content-Security-Policy violation.
//
// Environment (set by scripts/browser-check.sh):
//   SLUICE_UI_URL            the JobManager's REST address, http://127.0.0.1:PORT
//   SLUICE_TOKEN_FILE        its admin token file
//   SLUICE_JOB_FILE          the job file to submit (tests/browser/slow_sink_job.json)
//   SLUICE_TASKMANAGER_PIDS  {"tm-1": pid, ...}: the TaskManagers this test may kill
//   SLUICE_ARTIFACTS_DIR     where screenshots go on failure
//   SLUICE_SCREENSHOT        optional: save the job page there on success (the README's picture)
//   SLUICE_BROWSER_KEEP_GOING optional: 1 runs every step even after one failed
//   SLUICE_BROWSER_BUDGET_S  optional: no wait runs past this many seconds after the start (default 170)
//   CHROMIUM                 optional: the browser (default /usr/bin/chromium)
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const required = name => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this test through scripts/browser-check.sh`);
  return value;
};
const BASE_URL = required("SLUICE_UI_URL");
const TOKEN = fs.readFileSync(required("SLUICE_TOKEN_FILE"), "utf8").split("\n")[0].trim();
const JOB_FILE = required("SLUICE_JOB_FILE");
const TASKMANAGER_PIDS = JSON.parse(required("SLUICE_TASKMANAGER_PIDS"));
const ARTIFACTS_DIR = required("SLUICE_ARTIFACTS_DIR");
const SCREENSHOT = process.env.SLUICE_SCREENSHOT || "";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
/** Run every step even after one failed (to see all that fails, e.g. against a JobManager missing routes). */
const KEEP_GOING = process.env.SLUICE_BROWSER_KEEP_GOING === "1";

const JOB = JSON.parse(fs.readFileSync(JOB_FILE, "utf8"));
/** The sink the job file throttles, and the vertex that feeds it (which must turn HIGH). */
const SLOW_SINK = JOB.vertices.find(v => v.blackhole_sink && v.blackhole_sink.rows_per_second > 0).id;
const SINK_UPSTREAM = JOB.edges.find(e => e.to === SLOW_SINK).from;

/** Deadlines of the waits, in milliseconds. Generous against a loaded 2-core machine, still bounded. */
const TIMEOUT = {
  page: 15_000, // the page shows what the server has
  running: 30_000, // a submitted job has every task running
  rates: 30_000, // two different records/s values
  backpressure: 45_000, // the sink's upstream turns HIGH, the verdict names the sink
  savepoint: 60_000, // a savepoint completes (barriers queue behind back-pressured data)
  restart: 60_000, // heartbeat timeout + restart delay + redeploy
};
/** How often a condition is checked while waiting for it. */
const POLL_MS = 250;
/** The whole test's budget: a wait never runs past it, so a stuck run still fails a step (and saves its
 * screenshot) before scripts/browser-check.sh's own timeout would kill the process. */
const BUDGET_MS = Number(process.env.SLUICE_BROWSER_BUDGET_S || 170) * 1000;
const DEADLINE = Date.now() + BUDGET_MS;

let browser;
let page;
/** Script errors and CSP violations the page raised: the test fails on any. */
const pageProblems = [];
const consoleLines = [];
let failed = false;
let stepNumber = 0;

/** Runs one step unless an earlier one failed; on failure saves what the page showed. */
async function step(t, name, body) {
  stepNumber += 1;
  const number = stepNumber;
  await t.test(name, { skip: failed && !KEEP_GOING ? "an earlier step failed" : false }, async () => {
    const started = Date.now();
    try {
      await body();
      console.log(`# ${name}: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    } catch (error) {
      failed = true;
      await saveArtifacts(`${String(number).padStart(2, "0")}-${name.replace(/[^a-z0-9]+/gi, "-").slice(0, 60)}`);
      throw error;
    }
  });
}

async function saveArtifacts(base) {
  if (!page) return;
  fs.mkdirSync(ARTIFACTS_DIR, { recursive: true });
  const file = path.join(ARTIFACTS_DIR, base);
  await page.screenshot({ path: `${file}.png`, fullPage: true }).catch(e => console.log(`# no screenshot: ${e.message}`));
  await page.content().then(html => fs.writeFileSync(`${file}.html`, html)).catch(() => {});
  fs.writeFileSync(`${file}.console.txt`, consoleLines.join("\n"));
  console.log(`# saved ${file}.png, .html and .console.txt`);
}

/**
 * Polls `probe` until it returns { ok: true, value } or the deadline passes; then fails naming what was
 * awaited and the last thing seen.
 */
async function eventually(what, timeoutMs, probe) {
  const deadline = Math.min(Date.now() + timeoutMs, DEADLINE);
  let seen;
  for (;;) {
    try {
      const result = await probe();
      if (result.ok) return result.value;
      seen = result.seen;
    } catch (error) {
      seen = `error: ${error.message.split("\n")[0]}`;
    }
    if (Date.now() >= deadline) {
      const why = deadline === DEADLINE ? `the test's budget of ${BUDGET_MS / 1000} s ran out` : `not within ${timeoutMs / 1000} s`;
      throw new Error(`${what}: ${why}; last seen: ${JSON.stringify(seen)}`);
    }
    await new Promise(resolve => setTimeout(resolve, POLL_MS));
  }
}

/** The text of the first element matching `selector`, or null. */
const textOf = selector => page.locator(selector).first().textContent({ timeout: 1000 }).catch(() => null);
const attributeOf = (selector, name) => page.locator(selector).first().getAttribute(name, { timeout: 1000 }).catch(() => null);

/** A REST call from the test itself (not the page), with the admin token. */
async function rest(route, init = {}) {
  const response = await fetch(`${BASE_URL}${route}`, { ...init, headers: { Authorization: `Bearer ${TOKEN}`, ...(init.headers || {}) } });
  return { status: response.status, body: await response.json() };
}

test("the web UI shows a job's graph, back-pressure, bottleneck, checkpoints and recovery", async t => {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  t.after(() => browser.close());
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("pageerror", error => pageProblems.push(`script error: ${error.message}`));
  page.on("console", message => {
    consoleLines.push(`${message.type()}: ${message.text()}`);
    if (message.text().includes("Content Security Policy")) pageProblems.push(`CSP: ${message.text()}`);
  });
  page.on("dialog", dialog => dialog.accept());

  let jobId;

  await step(t, "the page asks for a token and signs in with it", async () => {
    await page.goto(`${BASE_URL}/`);
    await page.locator("#login").waitFor({ state: "visible", timeout: TIMEOUT.page });
    await page.fill("#token", TOKEN);
    await page.click("#login button[type=submit]");
    await page.locator("#signed-in").waitFor({ state: "visible", timeout: TIMEOUT.page });
    await eventually("the overview counts both TaskManagers", TIMEOUT.page, async () => {
      const text = await textOf('#cluster [data-stat="taskmanagers"] dd');
      return { ok: /^2 active/.test(text || ""), seen: text };
    });
  });

  await step(t, "an invalid job file is refused with the server's error shown as is", async () => {
    const broken = JSON.stringify({ name: "broken", vertices: [{ id: "only", parallelism: 1, filter: { predicate: "x > 1" } }], edges: [] });
    await page.setInputFiles("#job-file", { name: "broken.json", mimeType: "application/json", buffer: Buffer.from(broken) });
    await page.click("#submit-job");
    await page.locator('#submit-result[data-state="error"]').waitFor({ timeout: TIMEOUT.page });
    const form = new FormData();
    form.append("job_file", new Blob([broken], { type: "application/json" }), "broken.json");
    const direct = await rest("/jobs/submit", { method: "POST", body: form });
    assert.equal(direct.status, 400);
    assert.equal(await page.locator("#submit-result").textContent(), direct.body.error);
  });

  await step(t, "a job file submitted through the page runs", async () => {
    await page.setInputFiles("#job-file", JOB_FILE);
    await page.click("#submit-job");
    const link = page.locator("#submit-result [data-submitted-job-id]");
    await link.waitFor({ timeout: TIMEOUT.page });
    jobId = await link.getAttribute("data-submitted-job-id");
    await eventually(`job ${jobId} is RUNNING in the jobs list`, TIMEOUT.running, async () => {
      const status = await attributeOf(`#jobs tr[data-job-id="${jobId}"]`, "data-status");
      return { ok: status === "RUNNING", seen: status };
    });
  });

  await step(t, "its records/s move in the jobs list", async () => {
    const values = new Set();
    await eventually("two different records/s values", TIMEOUT.rates, async () => {
      const value = await attributeOf(`#jobs tr[data-job-id="${jobId}"]`, "data-records-per-second");
      const shown = await textOf(`#jobs tr[data-job-id="${jobId}"] td.records-per-second`);
      if (value !== null && value !== "" && Number(value) > 0) {
        values.add(Number(value));
        assert.notEqual(shown, "–", "a rate the server sent is shown");
      }
      return { ok: values.size >= 2, seen: { values: [...values], shown } };
    });
  });

  await step(t, "the job page draws every vertex and edge of the graph, chains boxed", async () => {
    await page.click(`a[data-job-link="${jobId}"]`);
    await page.waitForURL(`**/#/jobs/${jobId}`, { timeout: TIMEOUT.page });
    await page.locator("#job-graph").waitFor({ timeout: TIMEOUT.page });
    for (const vertex of JOB.vertices) {
      await page.locator(`#job-graph [data-vertex="${vertex.id}"]`).waitFor({ timeout: TIMEOUT.page });
      await page.locator(`#vertices tr[data-vertex-id="${vertex.id}"]`).waitFor({ timeout: TIMEOUT.page });
    }
    for (const edge of JOB.edges) {
      await page.locator(`#job-graph [data-edge="${edge.from}->${edge.to}"]`).waitFor({ timeout: TIMEOUT.page });
    }
    // No edge of this job is FORWARD, so every vertex is a chain of its own.
    assert.equal(await page.locator("#job-graph .chain").count(), JOB.vertices.length);
    await eventually(`the graph shows ${SINK_UPSTREAM}'s records/s`, TIMEOUT.page, async () => {
      const text = await textOf(`#job-graph [data-vertex="${SINK_UPSTREAM}"]`);
      return { ok: /out \d/.test(text || ""), seen: text };
    });
    // The source has event time: every vertex has a watermark and a lag behind the wall clock.
    for (const vertex of JOB.vertices) {
      await eventually(`${vertex.id}'s watermark and lag`, TIMEOUT.page, async () => {
        const cells = await page.locator(`#vertices tr[data-vertex-id="${vertex.id}"] td`).allTextContents();
        // Columns: ..., watermark (9), watermark lag (10).
        return { ok: /^\d\d:\d\d:\d\d\.\d{3}/.test(cells[9] || "") && /\d/.test(cells[10] || ""), seen: cells };
      });
    }
  });

  await step(t, "selecting a vertex in the graph shows its subtasks", async () => {
    await page.click(`#job-graph [data-vertex="${SINK_UPSTREAM}"]`);
    const parallelism = JOB.vertices.find(v => v.id === SINK_UPSTREAM).parallelism;
    await eventually(`${parallelism} subtasks of ${SINK_UPSTREAM} with their TaskManagers`, TIMEOUT.page, async () => {
      const rows = await page.locator("#subtasks tr[data-subtask]").allTextContents();
      const placed = await page.locator("#subtasks tr[data-subtask] td:nth-child(2)").allTextContents();
      return { ok: rows.length === parallelism && placed.every(id => id in TASKMANAGER_PIDS), seen: rows };
    });
    assert.equal(await attributeOf(`#job-graph [data-vertex="${SINK_UPSTREAM}"]`, "aria-pressed"), "true");
  });

  await step(t, `the slow sink's upstream (${SINK_UPSTREAM}) turns HIGH and the verdict names ${SLOW_SINK}`, async () => {
    await eventually(`${SINK_UPSTREAM} is back-pressured HIGH`, TIMEOUT.backpressure, async () => {
      const level = await attributeOf(`#job-graph [data-vertex="${SINK_UPSTREAM}"]`, "data-level");
      return { ok: level === "HIGH", seen: level };
    });
    await eventually(`the bottleneck verdict names ${SLOW_SINK}`, TIMEOUT.backpressure, async () => {
      const vertex = await attributeOf("#bottleneck", "data-vertex-id");
      const text = await textOf("#bottleneck");
      return { ok: vertex === SLOW_SINK && text.includes(SLOW_SINK), seen: { vertex, text } };
    });
    // The verdict's vertex is busy, the colour says so too.
    const busy = await attributeOf(`#job-graph [data-vertex="${SLOW_SINK}"]`, "data-busy-level");
    assert.notEqual(busy, "OK", `${SLOW_SINK} is the bottleneck but its busy level is ${busy}`);
  });

  await step(t, "a savepoint triggered from the page appears in the checkpoint history", async () => {
    await page.click("#action-savepoint");
    const triggerId = await eventually("the savepoint's trigger id", TIMEOUT.page, async () => {
      const id = await attributeOf("#action-result", "data-trigger-id");
      const state = await attributeOf("#action-result", "data-state");
      assert.notEqual(state, "error", await textOf("#action-result"));
      return { ok: Boolean(id), value: id, seen: await textOf("#action-result") };
    });
    const row = `#checkpoints tr[data-checkpoint-id="${triggerId}"]`;
    await eventually(`savepoint ${triggerId} COMPLETED in the history`, TIMEOUT.savepoint, async () => {
      const kind = await attributeOf(row, "data-kind");
      const status = await attributeOf(row, "data-status");
      return { ok: kind === "SAVEPOINT" && status === "COMPLETED", seen: { kind, status, result: await textOf("#action-result") } };
    });
    await page.locator(`#checkpoint-chart rect[data-checkpoint-id="${triggerId}"]`).waitFor({ timeout: TIMEOUT.page });
    // Its per-task acknowledgements: one per subtask of every chain (here every vertex is a chain).
    await page.click(`#checkpoints button[data-show-checkpoint="${triggerId}"]`);
    const tasks = JOB.vertices.reduce((sum, v) => sum + v.parallelism, 0);
    await eventually(`the savepoint's ${tasks} task acknowledgements`, TIMEOUT.page, async () => {
      const count = await page.locator("#checkpoint-tasks tbody tr").count();
      return { ok: count === tasks, seen: { count, detail: await textOf("#checkpoint-detail") } };
    });
    await eventually("the action says the savepoint completed", TIMEOUT.page, async () => {
      const text = await textOf("#action-result");
      return { ok: /completed/.test(text || ""), seen: text };
    });
  });

  let killed;
  await step(t, "a TaskManager killed with SIGKILL shows as a restart in the timeline", async () => {
    const metrics = await rest(`/jobs/${jobId}/metrics`);
    const sinkTask = metrics.body.tasks.find(task => task.vertex_ids.includes(SLOW_SINK));
    killed = sinkTask && sinkTask.task_manager_id;
    assert.ok(killed && TASKMANAGER_PIDS[killed], `the sink runs on ${killed}, whose PID is not known: ${JSON.stringify(TASKMANAGER_PIDS)}`);
    const attemptBefore = Number(await textOf('#job-facts [data-fact="attempt"] dd'));
    process.kill(TASKMANAGER_PIDS[killed], "SIGKILL");
    console.log(`# killed TaskManager ${killed} (pid ${TASKMANAGER_PIDS[killed]}), which ran ${SLOW_SINK}`);
    const entry = "#timeline [data-attempt][data-restarted=\"true\"]";
    await eventually("a restart in the timeline", TIMEOUT.restart, async () => {
      const count = await page.locator(entry).count();
      return { ok: count > 0, seen: { entries: count, note: await textOf("#timeline-note"), status: await attributeOf("#job-status", "data-status") } };
    });
    const text = await textOf(entry);
    assert.ok(text.includes(killed), `the timeline entry names the lost TaskManager ${killed}: ${text}`);
    await eventually("the job RUNNING again in a new attempt", TIMEOUT.restart, async () => {
      const status = await attributeOf("#job-status", "data-status");
      const attempt = Number(await textOf('#job-facts [data-fact="attempt"] dd'));
      return { ok: status === "RUNNING" && attempt > attemptBefore, seen: { status, attempt } };
    });
    for (const phase of ["detection", "cancel", "scheduling", "restore", "total"]) {
      await eventually(`the recovery's ${phase} duration`, TIMEOUT.page, async () => {
        const shown = await textOf(`${entry} [data-phase="${phase}"] dd`);
        return { ok: /\d/.test(shown || ""), seen: shown };
      });
    }
  });

  await step(t, "the TaskManagers page shows the killed one LOST and the other running tasks", async () => {
    await page.click('nav a[data-nav="taskmanagers"]');
    await eventually(`${killed} is LOST`, TIMEOUT.page, async () => {
      const state = await attributeOf(`#taskmanagers tr[data-tm-id="${killed}"]`, "data-state");
      return { ok: state === "LOST", seen: state };
    });
    const survivor = Object.keys(TASKMANAGER_PIDS).find(id => id !== killed);
    await eventually(`${survivor} runs the job's tasks and reports its memory`, TIMEOUT.page, async () => {
      const cells = await page.locator(`#taskmanagers tr[data-tm-id="${survivor}"] td`).allTextContents();
      // Columns: id, state, slots, tasks, memory, heartbeat age, ...
      const ok = cells[1] === "ACTIVE" && Number(cells[3]) > 0 && /iB$/.test(cells[4]) && /\d/.test(cells[5]);
      return { ok, seen: cells };
    });
  });

  await step(t, "the job page shows the back-pressure again after the recovery", async () => {
    await page.goBack();
    await page.waitForURL(`**/#/jobs/${jobId}`, { timeout: TIMEOUT.page });
    await eventually(`${SINK_UPSTREAM} is back-pressured HIGH again`, TIMEOUT.backpressure, async () => {
      const level = await attributeOf(`#job-graph [data-vertex="${SINK_UPSTREAM}"]`, "data-level");
      const vertex = await attributeOf("#bottleneck", "data-vertex-id");
      return { ok: level === "HIGH" && vertex === SLOW_SINK, seen: { level, vertex } };
    });
    if (SCREENSHOT) {
      fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      console.log(`# saved the job page to ${SCREENSHOT}`);
    }
  });

  await step(t, "cancel from the page ends the job", async () => {
    await page.click("#action-cancel");
    await eventually("the job CANCELED", TIMEOUT.page * 2, async () => {
      const status = await attributeOf("#job-status", "data-status");
      return { ok: status === "CANCELED", seen: { status, result: await textOf("#action-result") } };
    });
    assert.ok(await page.locator("#action-savepoint").isDisabled(), "no savepoint can be asked of an ended job");
  });

  await step(t, "the page raised no script error and no CSP violation", async () => {
    assert.deepEqual(pageProblems, []);
  });
});
