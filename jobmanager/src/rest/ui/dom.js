// DOM helpers: elements are built from data with text nodes and attributes only (server text never goes through
// innerHTML), and tables are kept in line with the data row by row.
import { DASH } from "./format.js";

const SVG_NS = "http://www.w3.org/2000/svg";

function setAttributes(el, attributes) {
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
}

function appendChildren(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** An HTML element: h("td", { class: "num" }, "12"). Strings become text nodes. */
export function h(tag, attributes, ...children) {
  const el = document.createElement(tag);
  setAttributes(el, attributes);
  appendChildren(el, children);
  return el;
}

/** An SVG element, built like h(). */
export function s(tag, attributes, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttributes(el, attributes);
  appendChildren(el, children);
  return el;
}

/** Replaces an element's children, skipping null/undefined/false like h() does. */
export function replaceContent(el, ...children) {
  el.replaceChildren();
  appendChildren(el, children);
}

/** A table with a header row and a body whose rows syncRows() keeps. */
export function table(id, caption, headings) {
  const body = h("tbody");
  const el = h("table", { id, class: "data" },
    caption ? h("caption", { class: "visually-hidden" }, caption) : null,
    h("thead", {}, h("tr", {}, headings.map(([text, numeric]) => h("th", { scope: "col", class: numeric ? "num" : null }, text)))),
    body);
  return { el, body };
}

/**
 * Brings a tbody in line with `items`, reusing the row of each key so that focus and selection survive a refresh:
 * a cell changes only when its text does. `cellsOf(item)` gives each cell as a string, a Node, or
 * `{ content, class }`; `attributesOf(item)` the row's data-* attributes.
 */
export function syncRows(body, items, keyOf, cellsOf, attributesOf = () => ({})) {
  const existing = new Map([...body.rows].map(row => [row.dataset.key, row]));
  const rows = items.map(item => {
    const key = String(keyOf(item));
    let row = existing.get(key);
    if (!row) row = h("tr", { "data-key": key });
    for (const [name, value] of Object.entries(attributesOf(item))) {
      if (value === null || value === undefined) row.removeAttribute(name);
      else if (row.getAttribute(name) !== String(value)) row.setAttribute(name, String(value));
    }
    cellsOf(item).forEach((cell, i) => {
      const spec = cell !== null && typeof cell === "object" && !(cell instanceof Node) ? cell : { content: cell };
      const content = spec.content instanceof Node ? spec.content : document.createTextNode(spec.content ?? DASH);
      let td = row.cells[i];
      if (!td) td = row.appendChild(h("td"));
      const className = spec.class || "";
      if (td.className !== className) td.className = className;
      if (td.dataset.text !== content.textContent || td.childNodes.length === 0) {
        td.dataset.text = content.textContent;
        td.replaceChildren(content);
      }
    });
    return row;
  });
  const same = rows.length === body.rows.length && rows.every((row, i) => body.rows[i] === row);
  if (!same) body.replaceChildren(...rows);
}

/** An empty-state row spanning the table. */
export function placeholderRow(body, columns, text) {
  body.replaceChildren(h("tr", { class: "placeholder" }, h("td", { colspan: columns }, text)));
}

/** Shows an action's outcome; errors are the server's text as is. */
export function showResult(el, state, ...content) {
  el.dataset.state = state;
  el.setAttribute("role", state === "error" ? "alert" : "status");
  el.replaceChildren(...content.map(c => (c instanceof Node ? c : document.createTextNode(String(c)))));
}
