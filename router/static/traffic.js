// The traffic panel: requests/s, tokens/s (and TTFT when per-request records exist) over the last
// hour, and the last requests. Until the server keeps usage records, the supervisor's counters
// (served, tokens generated per model) are sampled at each poll and their changes are the traffic.

import { drawChart } from "./chart.js";
import { clock, dash, el, ms, setText } from "./format.js";

const HOUR = 3600;
const BUCKET = 10;      // seconds per chart point when sampling counters
const RECENT = 50;

export class Traffic {
  constructor() {
    this.body = document.querySelector("#recent-table tbody");
    this.source = document.getElementById("traffic-source");
    this.ttftFigure = document.getElementById("ttft-figure");
    this.previous = null;       // model id -> {served, tokens} at the last poll
    this.buckets = new Map();   // bucket start (s) -> {requests, tokens}
    this.since = null;          // when sampling began
    this.recent = [];
  }

  fromCounters(status, now) {
    const counts = new Map(status.models.map((m) => [m.id, { served: m.served, tokens: m.tokens_generated }]));
    if (this.previous) {
      for (const [id, count] of counts) {
        const before = this.previous.get(id) ?? { served: 0, tokens: 0 };
        const requests = Math.max(0, count.served - before.served);
        const tokens = Math.max(0, count.tokens - before.tokens);
        if (!requests && !tokens) continue;
        this.add(now, requests, tokens);
        if (requests) {
          this.recent.unshift({ ts: now, model: id, endpoint: dash, status: `served ×${requests}`,
                                tokens, ttft: null, latency: null });
        }
      }
      this.recent.length = Math.min(this.recent.length, RECENT);
    } else {
      this.since = now;
    }
    this.previous = counts;
    setText(this.source, "from the supervisor's counters since this page opened");
    this.ttftFigure.hidden = true;
    this.drawCharts(now);
    this.drawRecent();
  }

  add(now, requests, tokens) {
    const start = Math.floor(now / BUCKET) * BUCKET;
    const bucket = this.buckets.get(start) ?? { requests: 0, tokens: 0 };
    bucket.requests += requests;
    bucket.tokens += tokens;
    this.buckets.set(start, bucket);
    for (const key of this.buckets.keys()) if (key < now - HOUR) this.buckets.delete(key);
  }

  drawCharts(now) {
    // The last hour, or since sampling began (at least five minutes), whichever is shorter.
    const window = [Math.max(now - HOUR, Math.min(this.since, now - 300)), now];
    const rps = [], tps = [];
    const first = Math.floor(Math.max(this.since, now - HOUR) / BUCKET) * BUCKET;
    for (let t = first; t <= now; t += BUCKET) {
      const bucket = this.buckets.get(t) ?? { requests: 0, tokens: 0 };
      rps.push({ t, v: bucket.requests / BUCKET });
      tps.push({ t, v: bucket.tokens / BUCKET });
    }
    drawChart(document.getElementById("chart-rps"), [rps], window, "Requests per second");
    drawChart(document.getElementById("chart-tps"), [tps], window, "Tokens per second");
  }

  drawRecent() {
    this.body.replaceChildren(...this.recent.map((r) => el("tr", {},
      el("td", { "data-label": "Time" }, clock(r.ts)),
      el("td", { "data-label": "Model" }, r.model ?? dash),
      el("td", { "data-label": "Endpoint" }, r.endpoint),
      el("td", { "data-label": "Status" }, String(r.status)),
      el("td", { "data-label": "Tokens", class: "num" }, String(r.tokens)),
      el("td", { "data-label": "TTFT", class: "num" }, ms(r.ttft)),
      el("td", { "data-label": "Latency", class: "num" }, ms(r.latency)))));
  }
}
