// Traffic from the usage records (GET /admin/usage*): requests and tokens per minute from the
// server's series, TTFT percentiles per minute and the recent requests from the rows of the last
// hour, fetched once and then only what is newer at each poll.

import { api } from "./api.js";
import { HOUR, RECENT } from "./traffic.js";

const MINUTE = 60;
const MAX_ROWS = 10000;   // rows kept for the TTFT chart (the server's page size)

// Nearest rank, as the server's /admin/usage/latency computes it.
function percentile(sorted, p) {
  return sorted.length ? sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] : null;
}

function rowKey(r) {
  return `${r.ts}|${r.model}|${r.endpoint}|${r.status}|${r.latency_ms}`;
}

export class UsageSource {
  constructor() {
    this.rows = [];   // the last hour's rows, newest first
  }

  async update(now) {
    const newest = this.rows.length ? this.rows[0].ts : now - HOUR;
    const [fresh, series] = await Promise.all([
      api("GET", `/admin/usage?since=${newest.toFixed(6)}&limit=${MAX_ROWS}`),
      api("GET", `/admin/usage/series?bucket=1m&since=${(now - HOUR).toFixed(0)}`),
    ]);
    const known = new Set(this.rows.filter((r) => r.ts === newest).map(rowKey));  // `since` is inclusive
    const added = fresh.data.filter((r) => !known.has(rowKey(r)));
    this.rows = added.concat(this.rows).filter((r) => r.ts >= now - HOUR).slice(0, MAX_ROWS);
    return this.view(series.data, now);
  }

  // Per model over the hour's rows: prompt tokens, those the prompt cache supplied, and their share.
  cacheByModel() {
    const models = new Map();
    for (const r of this.rows) {
      if (!r.model || !r.prompt_tokens) continue;
      const m = models.get(r.model) ?? { model: r.model, prompt: 0, cached: 0 };
      m.prompt += r.prompt_tokens;
      m.cached += r.cached_tokens;
      models.set(r.model, m);
    }
    return [...models.values()].sort((a, b) => a.model.localeCompare(b.model))
      .map((m) => ({ ...m, ratio: m.cached / m.prompt }));
  }

  view(points, now) {
    const mid = (start) => start + MINUTE / 2;
    const rps = points.map((p) => ({ t: mid(p.start), v: p.requests / MINUTE }));
    const tps = points.map((p) => ({ t: mid(p.start), v: p.completion_tokens / MINUTE }));
    const minutes = new Map();
    for (const r of this.rows) {
      if (r.ttft_ms === null || r.status >= 400) continue;
      const start = Math.floor(r.ts / MINUTE) * MINUTE;
      if (!minutes.has(start)) minutes.set(start, []);
      minutes.get(start).push(r.ttft_ms);
    }
    const p50 = [], p95 = [];
    for (const start of [...minutes.keys()].sort((a, b) => a - b)) {
      const sorted = minutes.get(start).sort((a, b) => a - b);
      p50.push({ t: mid(start), v: percentile(sorted, 50) });
      p95.push({ t: mid(start), v: percentile(sorted, 95) });
    }
    const recent = this.rows.slice(0, RECENT).map((r) => ({
      ts: r.ts, model: r.model, endpoint: r.endpoint, status: r.status,
      tokens: `${r.prompt_tokens}${r.cached_tokens ? ` (${r.cached_tokens} cached)` : ""} → ${r.completion_tokens}`,
      ttft: r.ttft_ms, latency: r.latency_ms,
    }));
    // The last hour, or since the first record in it (at least five minutes), whichever is shorter.
    const first = points.length ? points[0].start : now;
    return { source: "from the usage records", rps, tps, ttft: [p50, p95], recent, cache: this.cacheByModel(),
             window: [Math.max(now - HOUR, Math.min(first, now - 300)), now] };
  }
}
