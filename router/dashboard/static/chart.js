// A tiny SVG line chart: one or two series over a time window, a y scale from 0 to the maximum.

import { rate } from "./format.js";

const NS = "http://www.w3.org/2000/svg";
const LEFT = 34, BOTTOM = 16, TOP = 6;

function svg(tag, attrs) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

// series: [[{t, v}], ...] (t in seconds); window: [start, end] in seconds.
// Drawn at the element's own pixel size, so text is never stretched.
export function drawChart(root, series, [start, end], label) {
  const W = root.clientWidth || 300, H = root.clientHeight || 120;
  root.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const values = series.flat().map((p) => p.v).filter(Number.isFinite);
  const max = Math.max(1e-9, ...values);
  const x = (t) => LEFT + ((t - start) / Math.max(1, end - start)) * (W - LEFT - 2);
  const y = (v) => H - BOTTOM - (v / max) * (H - BOTTOM - TOP);
  const nodes = [
    svg("line", { class: "axis", x1: LEFT, y1: H - BOTTOM, x2: W, y2: H - BOTTOM }),
    svg("line", { class: "axis", x1: LEFT, y1: TOP, x2: LEFT, y2: H - BOTTOM }),
    Object.assign(svg("text", { x: LEFT - 4, y: TOP + 8, "text-anchor": "end" }), { textContent: rate(max) }),
    Object.assign(svg("text", { x: LEFT - 4, y: H - BOTTOM, "text-anchor": "end" }), { textContent: "0" }),
    Object.assign(svg("text", { x: LEFT, y: H - 3 }), { textContent: `-${Math.round((end - start) / 60)} min` }),
    Object.assign(svg("text", { x: W - 2, y: H - 3, "text-anchor": "end" }), { textContent: "now" }),
  ];
  series.forEach((points, i) => {
    if (!points.length) return;
    const d = points.map((p, j) => `${j ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join("");
    if (i === 0) {
      const area = `${d}L${x(points.at(-1).t).toFixed(1)},${H - BOTTOM}L${x(points[0].t).toFixed(1)},${H - BOTTOM}Z`;
      nodes.push(svg("path", { class: "area", d: area }));
    }
    nodes.push(svg("path", { class: i === 0 ? "line" : "line second", d }));
    const last = points.at(-1);
    nodes.push(svg("circle", { class: i === 0 ? "dot" : "dot second", cx: x(last.t), cy: y(last.v), r: 2.5 }));
  });
  const latest = series.map((s) => (s.length ? rate(s.at(-1).v) : "none"));
  root.setAttribute("aria-label", `${label}: latest ${latest.join(" / ")}, peak ${rate(max)}`);
  root.replaceChildren(...nodes);
}
