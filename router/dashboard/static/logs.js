// The logs panel: one model's worker log, following live (only the lines written since the last
// read are fetched), and the diagnosis of its last failed load.

import { api, modelPath, offered } from "./api.js";
import { bytes, clock, el, setText } from "./format.js";

const TAIL = 200;
const KEEP = 2000;        // lines kept on the page

const logsPath = (id) => `/admin/models/logs/${modelPath(id)}`;

export class Logs {
  constructor() {
    this.panel = document.getElementById("logs");
    this.select = document.getElementById("logs-model");
    this.follow = document.getElementById("logs-follow");
    this.output = document.getElementById("logs-lines");
    this.diagnosis = document.getElementById("logs-diagnosis");
    this.model = null;
    this.offset = null;
    this.state = null;
    this.select.addEventListener("change", () => this.open(this.select.value));
  }

  // Whether the server offers worker logs (a 404 from a model it knows means it does not).
  async detect(models) {
    if (!models.length) return false;
    this.panel.hidden = (await offered(`${logsPath(models[0].id)}?tail=1`)) === undefined;
    return !this.panel.hidden;
  }

  async update(status) {
    const ids = status.models.map((m) => m.id);
    if (ids.join("\n") !== [...this.select.options].map((o) => o.value).join("\n")) {
      this.select.replaceChildren(...ids.map((id) => el("option", { value: id }, id)));
      if (ids.includes(this.model)) this.select.value = this.model;
    }
    const id = this.select.value;
    const state = status.models.find((m) => m.id === id)?.state;
    if (id !== this.model || state !== this.state) {
      this.state = state;                      // a new state may come with a new diagnosis
      return this.open(id);
    }
    return this.follow.checked ? this.more() : undefined;
  }

  async open(id) {
    this.model = id;
    const reply = await api("GET", `${logsPath(id)}?tail=${TAIL}&diagnose=true`);
    if (this.model !== id) return;
    this.output.textContent = "";
    this.append(reply.lines);
    this.offset = reply.offset;
    this.showDiagnosis(reply.diagnosis);
  }

  async more() {
    const id = this.model;
    const reply = await api("GET", `${logsPath(id)}?after=${this.offset}&tail=${KEEP}`);
    if (this.model !== id) return;
    this.offset = reply.offset;
    this.append(reply.lines);
  }

  append(lines) {
    if (!lines.length) return;
    const atBottom = this.output.scrollTop + this.output.clientHeight >= this.output.scrollHeight - 4;
    const all = (this.output.textContent ? `${this.output.textContent}\n` : "") + lines.join("\n");
    const kept = all.split("\n").slice(-KEEP);
    this.output.textContent = kept.join("\n");
    if (atBottom) this.output.scrollTop = this.output.scrollHeight;
  }

  showDiagnosis(d) {
    const failed = d?.last_failed_load;
    this.diagnosis.hidden = !d;
    if (!d) return;
    setText(this.diagnosis.querySelector(".summary"),
      `${d.model_id}: ${d.state}, detected ${d.detected_type}, estimate ${bytes(d.estimate_bytes)}`
      + `${d.estimate_was_measured ? " (measured before)" : ""}`);
    setText(this.diagnosis.querySelector(".reason"), failed
      ? `Last failed load at ${clock(failed.at)}: ${failed.reason}${failed.out_of_memory ? " (out of memory)" : ""}`
      : "No failed load.");
    const trace = this.diagnosis.querySelector(".traceback");
    trace.hidden = !failed?.traceback;
    setText(trace, failed?.traceback ?? "");
  }
}
