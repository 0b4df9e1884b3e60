// The fleet panel: the pool's budget bar split by model, one table row per model, and the
// load (pin) / unload / force unload buttons with their results.

import { api, modelPath } from "./api.js";
import { bytes, dash, duration, el, setText } from "./format.js";

const LIVE = new Set(["starting", "loading", "ready", "busy", "draining", "stopping"]);
const COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7"];
const COLUMNS = ["Model", "State", "Memory", "PID", "In flight", "Queued", "Served", "TTL left", "Last error",
                 "Actions"];

// What a model holds of the budget: measured once known, estimated until then; nothing without a process.
export function footprint(model) {
  if (!LIVE.has(model.state)) return 0;
  return model.memory.measured ?? model.memory.estimated ?? 0;
}

function memoryText(model) {
  const { measured, estimated } = model.memory;
  return `${measured ? bytes(measured) : dash} / ${estimated ? bytes(estimated) : dash}`;
}

// The catalog's entries the supervisor holds no slot for yet (discovered, never used) join the
// supervisor's models as stopped rows; a disabled entry shows as such.
function withCatalog(models, registry) {
  if (!registry) return models;
  const entries = new Map(registry.models.map((e) => [e.id, e]));
  const rows = models.map((m) => ({ ...m, entry: entries.get(m.id) }));
  const known = new Set(models.map((m) => m.id));
  for (const e of registry.models) {
    if (known.has(e.id)) continue;
    rows.push({ id: e.id, type: e.type, state: "stopped", memory: { measured: null, estimated: null }, pid: null,
                in_flight: 0, queued: 0, served: 0, ttl_remaining: null, last_error: null, pinned: false, entry: e });
  }
  for (const row of rows) if (row.entry && !row.entry.enabled) row.state = "disabled";
  return rows;
}

function kind(model) {
  const e = model.entry;
  const catalog = e ? ` · ${e.tier} · ${e.source}${e.size_bytes ? ` · ${bytes(e.size_bytes)} on disk` : ""}` : "";
  return `${model.type}${catalog}${model.pinned ? " · pinned" : ""}`;
}

export class Fleet {
  constructor(refresh) {
    this.refresh = refresh;                 // asks the page to poll now (after an action)
    this.body = document.querySelector("#fleet-table tbody");
    this.bar = document.getElementById("budget-bar");
    this.legend = document.getElementById("budget-legend");
    this.result = document.getElementById("action-result");
    this.summary = document.getElementById("pool-summary");
    this.rows = new Map();                  // model id -> {row, cells, buttons, busy}
    this.colours = new Map();
  }

  colour(id) {
    if (!this.colours.has(id)) this.colours.set(id, COLOURS[this.colours.size % COLOURS.length]);
    return this.colours.get(id);
  }

  // `registry`: the catalog (GET /admin/models/registry) where the server has one.
  update(status, registry) {
    const { pool } = status;
    const models = withCatalog(status.models, registry);
    setText(this.summary, `${models.filter((m) => LIVE.has(m.state)).length} loaded (max ${pool.max_models}) · `
      + `${bytes(pool.in_use)} of ${bytes(pool.budget)} budget · machine ${bytes(pool.machine_available)} free `
      + `of ${bytes(pool.machine_total)} · policy ${pool.policy}`);
    this.drawBudget(pool, models);
    const seen = new Set();
    for (const model of models) {
      seen.add(model.id);
      this.drawRow(model);
    }
    for (const [id, entry] of this.rows) {
      if (!seen.has(id)) { entry.row.remove(); this.rows.delete(id); }
    }
  }

  drawBudget(pool, models) {
    const parts = models.filter((m) => footprint(m) > 0).map((m) => ({ id: m.id, size: footprint(m),
                                                                       colour: this.colour(m.id) }));
    for (const spare of pool.spares ?? (pool.spare ? [pool.spare] : [])) {
      if (spare.memory > 0) parts.push({ id: "warm spare", size: spare.memory, colour: "var(--spare)" });
    }
    const budget = Math.max(pool.budget, 1);
    this.bar.replaceChildren(...parts.map((p) => {
      const span = el("span", { "data-model": p.id, "data-bytes": p.size, title: `${p.id}: ${bytes(p.size)}` });
      span.style.width = `${Math.min(100, (100 * p.size) / budget)}%`;
      span.style.background = p.colour;
      return span;
    }));
    this.bar.dataset.used = pool.in_use;
    this.bar.setAttribute("aria-label", `Memory budget: ${bytes(pool.in_use)} of ${bytes(pool.budget)} in use`);
    const items = parts.map((p) => {
      const swatch = el("i");
      swatch.style.background = p.colour;
      return el("li", {}, swatch, `${p.id} ${bytes(p.size)}`);
    });
    items.push(el("li", {}, `free ${bytes(pool.available)}`));
    this.legend.replaceChildren(...items);
  }

  drawRow(model) {
    let entry = this.rows.get(model.id);
    if (!entry) {
      entry = this.makeRow(model.id);
      this.rows.set(model.id, entry);
    }
    const { cells, buttons } = entry;
    entry.row.dataset.state = model.state;
    setText(cells.type, kind(model));
    const badge = cells.state.firstChild;
    badge.className = `state state-${model.state}`;
    setText(badge, model.state);
    setText(cells.memory, memoryText(model));
    setText(cells.pid, model.pid ?? dash);
    setText(cells.inflight, model.in_flight);
    setText(cells.queued, model.queued);
    setText(cells.served, model.served);
    setText(cells.ttl, model.pinned ? "pinned" : duration(model.ttl_remaining));
    const oom = model.last_error_out_of_memory ? " (out of memory)" : "";
    setText(cells.error, model.last_error ? `${model.last_error}${oom}` : "");
    const live = LIVE.has(model.state);
    buttons.load.disabled = entry.busy || model.state === "disabled";
    buttons.unload.disabled = entry.busy || !live;
    buttons.force.disabled = entry.busy || !live;
  }

  makeRow(id) {
    const td = (label, cls) => el("td", { "data-label": label, class: cls });
    const cells = {
      model: td(COLUMNS[0]), state: td(COLUMNS[1]), memory: td(COLUMNS[2], "num"), pid: td(COLUMNS[3], "num"),
      inflight: td(COLUMNS[4], "num"), queued: td(COLUMNS[5], "num"), served: td(COLUMNS[6], "num"),
      ttl: td(COLUMNS[7], "num"), error: td(COLUMNS[8], "error-cell"), actions: td(COLUMNS[9], "actions"),
    };
    cells.type = el("div", { class: "pin" });
    cells.model.append(el("div", {}, el("div", { class: "model-id" }, id), cells.type));
    cells.state.append(el("span", { class: "state" }));
    const entry = { cells, busy: false };
    const button = (text, verb, cls) => el("button", { type: "button", class: cls, "data-action": verb,
                                                       "aria-label": `${text} ${id}`,
                                                       onclick: () => this.act(entry, id, verb) }, text);
    entry.buttons = { load: button("Load", "load"), unload: button("Unload", "unload"),
                      force: button("Force unload", "force", "danger") };
    cells.actions.append(entry.buttons.load, entry.buttons.unload, entry.buttons.force);
    entry.row = el("tr", { "data-model": id }, cells.model, cells.state, cells.memory, cells.pid, cells.inflight,
                   cells.queued, cells.served, cells.ttl, cells.error, cells.actions);
    this.body.append(entry.row);
    return entry;
  }

  async act(entry, id, verb) {
    entry.busy = true;
    Object.values(entry.buttons).forEach((b) => { b.disabled = true; });
    const words = { load: "Loading", unload: "Unloading", force: "Force-unloading" };
    this.show(`${words[verb]} ${id}…`, false);
    try {
      const path = verb === "load" ? `/admin/models/load/${modelPath(id)}`
        : `/admin/models/unload/${modelPath(id)}${verb === "force" ? "?force=true" : ""}`;
      const reply = await api("POST", path);
      this.show(verb === "load" ? `${id}: loaded and pinned (pid ${reply.pid ?? dash}, `
        + `${bytes(reply.memory?.measured ?? reply.memory?.estimated)})`
        : `${id}: ${reply.action === "forced" ? "ended at once" : "drained and ended"}, `
        + `${bytes(reply.memory_released)} released in ${reply.seconds?.toFixed(2) ?? dash} s`, false);
    } catch (e) {
      this.show(`${words[verb]} ${id} failed: ${e.message}`, true);
    } finally {
      entry.busy = false;
      this.refresh();
    }
  }

  show(text, failed) {
    this.result.classList.toggle("failed", failed);
    setText(this.result, text);
  }
}
