// The traffic panel: requests/s, tokens/s and TTFT p50/p95 over the last hour as charts, and the
// last 50 requests. Its figures come from a source: the usage records when the server keeps them
// (usage.js), otherwise the supervisor's counters sampled at each poll (CounterSource below).

import { drawChart } from "./chart.js";
import { clock, dash, el, ms, setText } from "./format.js";

export const HOUR = 3600;
export const RECENT = 50;
const BUCKET = 10;      // seconds per chart point when sampling counters

// What a source hands the panel: chart points ({t, v}) and recent rows, newest first.
export function drawTraffic(view, now) {
  setText(document.getElementById("traffic-source"), view.source);
  drawChart(document.getElementById("chart-rps"), [view.rps], view.window, "Requests per second");
  drawChart(document.getElementById("chart-tps"), [view.tps], view.window, "Tokens per second");
  document.getElementById("ttft-figure").hidden = !view.ttft;
  if (view.ttft) drawChart(document.getElementById("chart-ttft"), view.ttft, view.window, "TTFT p50 and p95 (ms)");
  document.querySelector("#recent-table tbody").replaceChildren(...view.recent.map((r) => el("tr", {},
    el("td", { "data-label": "Time" }, clock(r.ts)),
    el("td", { "data-label": "Model" }, r.model ?? dash),
    el("td", { "data-label": "Endpoint" }, r.endpoint),
    el("td", { "data-label": "Status" }, String(r.status)),
    el("td", { "data-label": "Tokens", class: "num" }, r.tokens),
    el("td", { "data-label": "TTFT", class: "num" }, ms(r.ttft)),
    el("td", { "data-label": "Latency", class: "num" }, ms(r.latency)))));
  // The prompt cache's hits per model: only the usage records know them.
  document.getElementById("cache-figure").hidden = !view.cache;
  if (view.cache) document.querySelector("#cache-table tbody").replaceChildren(...view.cache.map((c) => el("tr", {},
    el("td", { "data-label": "Model" }, c.model),
    el("td", { "data-label": "Prompt tokens", class: "num" }, String(c.prompt)),
    el("td", { "data-label": "Cached", class: "num" }, String(c.cached)),
    el("td", { "data-label": "Hit ratio", class: "num" }, `${Math.round(100 * c.ratio)} %`))));
}

// Traffic from the supervisor's counters (served and tokens generated per model): what changed
// since the last poll. Its history starts when the page opens.
export class CounterSource {
  constructor() {
    this.previous = null;       // model id -> {served, tokens} at the last poll
    this.buckets = new Map();   // bucket start (s) -> {requests, tokens}
    this.since = null;
    this.recent = [];
  }

  update(status, now) {
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
                                tokens: String(tokens), ttft: null, latency: null });
        }
      }
      this.recent.length = Math.min(this.recent.length, RECENT);
    } else {
      this.since = now;
    }
    this.previous = counts;
    return this.view(now);
  }

  add(now, requests, tokens) {
    const start = Math.floor(now / BUCKET) * BUCKET;
    const bucket = this.buckets.get(start) ?? { requests: 0, tokens: 0 };
    bucket.requests += requests;
    bucket.tokens += tokens;
    this.buckets.set(start, bucket);
    for (const key of this.buckets.keys()) if (key < now - HOUR) this.buckets.delete(key);
  }

  view(now) {
    const rps = [], tps = [];
    const first = Math.floor(Math.max(this.since, now - HOUR) / BUCKET) * BUCKET;
    for (let t = first; t <= now; t += BUCKET) {
      const bucket = this.buckets.get(t) ?? { requests: 0, tokens: 0 };
      rps.push({ t, v: bucket.requests / BUCKET });
      tps.push({ t, v: bucket.tokens / BUCKET });
    }
    // The last hour, or since sampling began (at least five minutes), whichever is shorter.
    return { source: "from the supervisor's counters since this page opened", rps, tps, ttft: null,
             recent: this.recent, window: [Math.max(now - HOUR, Math.min(this.since, now - 300)), now] };
  }
}
