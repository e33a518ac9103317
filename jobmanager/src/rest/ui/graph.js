// The job graph: a layered layout (columns by depth, a chain's vertices side by side on one row inside its box),
// drawn once as SVG and then updated in place with each vertex's figures and colour.
import { h, s } from "./dom.js";
import { formatByteRate, formatPercent, formatRate, formatWatermark } from "./format.js";
import { levelOf } from "./status.js";

const NODE_WIDTH = 236;
const NODE_HEIGHT = 100;
const COLUMN_GAP = 70;
const ROW_GAP = 28;
const CHAIN_PADDING = 8;
const CHAIN_HEADER = 20;
const GRAPH_MARGIN = 12;

/**
 * Where each vertex and chain goes. Depth is the longest path from a source (so every edge points right); each
 * chain (or lone vertex) takes one row over the columns of its vertices, the free row nearest the mean row of its
 * inputs, placed in order of depth so that inputs are placed first.
 */
function layoutPlan(plan) {
  const byId = new Map(plan.vertices.map(v => [v.id, v]));
  const inputs = new Map(plan.vertices.map(v => [v.id, []]));
  for (const edge of plan.edges) if (inputs.has(edge.to) && byId.has(edge.from)) inputs.get(edge.to).push(edge.from);
  const depth = new Map();
  const depthOf = (id, visiting = new Set()) => {
    if (depth.has(id)) return depth.get(id);
    if (visiting.has(id)) return 0; // a cycle cannot pass validation; stay finite regardless
    visiting.add(id);
    const d = inputs.get(id).reduce((max, from) => Math.max(max, depthOf(from, visiting) + 1), 0);
    depth.set(id, d);
    return d;
  };
  plan.vertices.forEach(v => depthOf(v.id));

  // Groups: the plan's chains (in vertex order of depth), plus a group for any vertex no chain names.
  const groups = [];
  const grouped = new Set();
  for (const chain of plan.chains || []) {
    const ids = chain.vertex_ids.filter(id => byId.has(id) && !grouped.has(id)).sort((a, b) => depth.get(a) - depth.get(b));
    if (ids.length === 0) continue;
    ids.forEach(id => grouped.add(id));
    groups.push({ index: chain.index, parallelism: chain.parallelism, ids });
  }
  for (const v of plan.vertices) if (!grouped.has(v.id)) groups.push({ index: null, parallelism: v.parallelism, ids: [v.id] });
  for (const g of groups) {
    g.first = Math.min(...g.ids.map(id => depth.get(id)));
    g.last = Math.max(...g.ids.map(id => depth.get(id)));
  }

  const rowOf = new Map();
  const taken = []; // taken[row] = [[first, last], ...]
  const free = (row, g) => !(taken[row] || []).some(([a, b]) => a <= g.last && g.first <= b);
  for (const g of [...groups].sort((a, b) => a.first - b.first)) {
    const feeding = g.ids.flatMap(id => inputs.get(id)).filter(id => rowOf.has(id) && !g.ids.includes(id));
    const wanted = feeding.length ? Math.round(feeding.reduce((sum, id) => sum + rowOf.get(id), 0) / feeding.length) : 0;
    let row = wanted;
    for (let step = 0; !free(row, g); step += 1) {
      row = step % 2 === 0 ? wanted + step / 2 + 1 : Math.max(0, wanted - (step + 1) / 2);
      if (step > 4 * groups.length) {
        row = taken.length; // a fresh row is always free
        break;
      }
    }
    (taken[row] = taken[row] || []).push([g.first, g.last]);
    g.row = row;
    g.ids.forEach(id => rowOf.set(id, row));
  }

  const columnX = d => GRAPH_MARGIN + CHAIN_PADDING + d * (NODE_WIDTH + COLUMN_GAP);
  const rowHeight = CHAIN_HEADER + NODE_HEIGHT + 2 * CHAIN_PADDING + ROW_GAP;
  const rowY = r => GRAPH_MARGIN + r * rowHeight;
  const nodes = new Map(plan.vertices.map(v => [v.id, { x: columnX(depth.get(v.id)), y: rowY(rowOf.get(v.id)) + CHAIN_HEADER + CHAIN_PADDING, vertex: v }]));
  const boxes = groups.map(g => ({
    group: g,
    x: columnX(g.first) - CHAIN_PADDING,
    y: rowY(g.row),
    width: (g.last - g.first) * (NODE_WIDTH + COLUMN_GAP) + NODE_WIDTH + 2 * CHAIN_PADDING,
    height: CHAIN_HEADER + NODE_HEIGHT + 2 * CHAIN_PADDING,
  }));
  const columns = Math.max(0, ...depth.values()) + 1;
  const rows = Math.max(0, ...groups.map(g => g.row)) + 1;
  return {
    nodes,
    boxes,
    width: 2 * GRAPH_MARGIN + columns * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP + 2 * CHAIN_PADDING,
    height: 2 * GRAPH_MARGIN + rows * rowHeight - ROW_GAP,
  };
}

/** Shortens a label to fit a node, keeping its start. */
const fit = (text, max) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/**
 * Builds the SVG once for a plan; update(details) then sets each vertex's figures and colour in place (so the
 * focused vertex stays focused), select(id) marks the selected one.
 */
export function buildGraph(plan, onSelect) {
  const layout = layoutPlan(plan);
  const svg = s("svg", {
    id: "job-graph",
    class: "graph",
    viewBox: `0 0 ${layout.width} ${layout.height}`,
    width: layout.width,
    height: layout.height,
    role: "group",
    "aria-label": `Job graph: ${plan.vertices.length} vertices in ${layout.boxes.length} tasks`,
  });
  svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-head" }))));

  for (const box of layout.boxes) {
    const g = box.group;
    const label = g.index === null ? `×${g.parallelism}` : `task ${g.index} · parallelism ${g.parallelism}`;
    svg.append(s("g", { class: "chain", "data-chain": g.index ?? "" },
      s("rect", { x: box.x, y: box.y, width: box.width, height: box.height, rx: 8, class: "chain-box" }),
      s("text", { x: box.x + 8, y: box.y + 14, class: "chain-label" }, label)));
  }

  for (const edge of plan.edges) {
    const from = layout.nodes.get(edge.from);
    const to = layout.nodes.get(edge.to);
    if (!from || !to) continue;
    const x1 = from.x + NODE_WIDTH;
    const y1 = from.y + NODE_HEIGHT / 2;
    const x2 = to.x;
    const y2 = to.y + NODE_HEIGHT / 2;
    const bend = Math.max(24, (x2 - x1) / 2);
    const partitioning = edge.partitioning || "FORWARD";
    const label = edge.side_output ? `${partitioning} · ${edge.side_output}` : partitioning;
    svg.append(s("g", { class: `edge${edge.chained ? " chained" : ""}${edge.side_output ? " side-output" : ""}`, "data-edge": `${edge.from}->${edge.to}`, "data-partitioning": partitioning },
      s("title", {}, `${edge.from} → ${edge.to}: ${label}${edge.chained ? " (chained: a direct call)" : ""}`),
      s("path", { d: `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`, "marker-end": "url(#arrow)" }),
      edge.chained ? null : s("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 6, class: "edge-label", "text-anchor": "middle" }, label)));
  }

  const nodes = new Map();
  for (const [id, place] of layout.nodes) {
    const v = place.vertex;
    const line = (n, cls) => s("text", { x: place.x + 10, y: place.y + 20 + n * 17, class: cls });
    const title = s("title", {}, id);
    const texts = { name: line(0, "vertex-name"), operator: line(1, "vertex-line"), input: line(2, "vertex-line"), output: line(3, "vertex-line"), load: line(4, "vertex-line") };
    texts.name.textContent = fit(id, 28);
    texts.operator.textContent = `${v.operator} · parallelism ${v.parallelism}`;
    const g = s("g", {
      class: "vertex level-unknown",
      "data-vertex": id,
      "data-level": "UNKNOWN",
      "data-busy-level": "UNKNOWN",
      tabindex: 0,
      role: "button",
      "aria-pressed": "false",
    }, title, s("rect", { x: place.x, y: place.y, width: NODE_WIDTH, height: NODE_HEIGHT, rx: 6, class: "vertex-box" }), Object.values(texts));
    g.addEventListener("click", () => onSelect(id));
    g.addEventListener("keydown", event => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        onSelect(id);
      }
    });
    nodes.set(id, { g, title, texts });
    svg.append(g);
  }

  return {
    svg,
    update(details) {
      for (const v of details.vertices || []) {
        const node = nodes.get(v.id);
        if (!node) continue;
        const busy = levelOf(v.busy_level, v.busy_ratio);
        const pressured = levelOf(v.backpressure_level, v.backpressured_ratio);
        const colour = vertexColour(busy, pressured, v.busy_ratio, v.backpressured_ratio);
        node.g.setAttribute("class", `vertex ${colour}${node.g.classList.contains("selected") ? " selected" : ""}`);
        node.g.setAttribute("data-level", pressured);
        node.g.setAttribute("data-busy-level", busy);
        node.texts.input.textContent = `in ${formatRate(v.records_in_per_second)} · ${formatByteRate(v.bytes_in_per_second)}`;
        node.texts.output.textContent = `out ${formatRate(v.records_out_per_second)} · ${formatByteRate(v.bytes_out_per_second)}`;
        node.texts.load.textContent = `busy ${formatPercent(v.busy_ratio)} · back-pressured ${formatPercent(v.backpressured_ratio)}`;
        const summary = `${v.id} (${v.operator}, parallelism ${v.parallelism}): busy ${formatPercent(v.busy_ratio)} ${busy}, ` +
          `back-pressured ${formatPercent(v.backpressured_ratio)} ${pressured}; records in ${formatRate(v.records_in_per_second)}, ` +
          `out ${formatRate(v.records_out_per_second)}; watermark ${formatWatermark(v.watermark_ms)}`;
        node.title.textContent = summary;
        node.g.setAttribute("aria-label", summary);
      }
    },
    select(id) {
      for (const [vertexId, node] of nodes) {
        node.g.classList.toggle("selected", vertexId === id);
        node.g.setAttribute("aria-pressed", String(vertexId === id));
      }
    },
  };
}

/**
 * The colour class of a vertex, as in Flink: a back-pressured vertex is grey to black, a busy one orange to red,
 * one that is neither blue. When both are raised, the larger ratio decides.
 */
function vertexColour(busy, pressured, busyRatio, pressuredRatio) {
  if (busy === "UNKNOWN" && pressured === "UNKNOWN") return "level-unknown";
  const rank = { UNKNOWN: 0, OK: 0, LOW: 1, HIGH: 2 };
  if (rank[busy] === 0 && rank[pressured] === 0) return "level-ok";
  const pressuredWins = rank[pressured] > rank[busy] || (rank[pressured] === rank[busy] && (pressuredRatio || 0) >= (busyRatio || 0));
  return pressuredWins ? `backpressured-${pressured.toLowerCase()}` : `busy-${busy.toLowerCase()}`;
}

export function graphLegend() {
  const item = (cls, text) => h("li", {}, h("span", { class: `swatch ${cls}`, "aria-hidden": "true" }), text);
  return h("ul", { class: "legend", "aria-label": "Colours of the graph" },
    item("level-ok", "OK: busy and back-pressured ≤ 10 %"),
    item("busy-low", "busy LOW (≤ 50 %)"),
    item("busy-high", "busy HIGH (> 50 %)"),
    item("backpressured-low", "back-pressured LOW (≤ 50 %)"),
    item("backpressured-high", "back-pressured HIGH (> 50 %)"),
    item("level-unknown", "no figures"));
}
