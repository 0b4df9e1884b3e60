// The keys panel (when the server keeps API keys): create one (its token shown once, with a copy
// button), list them, revoke one.

import { api, offered } from "./api.js";
import { clock, dash, el, setText } from "./format.js";

const SCOPES = ["chat", "completions", "embeddings", "responses", "messages"];

export class Keys {
  constructor() {
    this.panel = document.getElementById("keys");
    this.body = document.querySelector("#keys-table tbody");
    this.form = document.getElementById("key-form");
    this.created = document.getElementById("key-created");
    this.result = document.getElementById("key-result");
    this.scopes = document.getElementById("key-scopes");
    this.scopes.replaceChildren(...SCOPES.map((s) => el("label", {},
      el("input", { type: "checkbox", name: "scope", value: s, checked: true }), ` ${s}`)));
    this.form.addEventListener("submit", (e) => { e.preventDefault(); this.create(); });
    document.getElementById("key-copy").addEventListener("click", () => this.copy());
  }

  async detect() {
    const list = await offered("/admin/keys");
    this.panel.hidden = list === undefined;
    if (list) this.draw(list.data);
    return !this.panel.hidden;
  }

  async refresh() {
    this.draw((await api("GET", "/admin/keys")).data);
  }

  draw(keys) {
    this.body.replaceChildren(...keys.map((k) => el("tr", { "data-key": k.id },
      el("td", { "data-label": "Name" }, k.name),
      el("td", { "data-label": "Id" }, el("code", {}, k.id)),
      el("td", { "data-label": "Scopes" }, k.scopes.join(", ")),
      el("td", { "data-label": "Created" }, new Date(k.created_at * 1000).toLocaleString()),
      el("td", { "data-label": "Last used" }, k.last_used_at ? clock(k.last_used_at) : dash),
      el("td", { "data-label": "Requests", class: "num" }, String(k.requests)),
      el("td", { "data-label": "Actions", class: "actions" }, el("button", {
        type: "button", class: "danger", "aria-label": `Revoke ${k.name}`, onclick: () => this.revoke(k),
      }, "Revoke")))));
  }

  async create() {
    const name = this.form.elements.name.value.trim();
    const scopes = [...this.form.querySelectorAll("input[name=scope]:checked")].map((i) => i.value);
    try {
      const key = await api("POST", "/admin/keys", { name, scopes });
      this.form.reset();
      setText(document.getElementById("key-token"), key.key);
      this.created.hidden = false;
      setText(this.result, `Created ${key.name}: copy its key now, it is not shown again.`);
      await this.refresh();
    } catch (e) {
      setText(this.result, `Could not create the key: ${e.message}`);
    }
  }

  async copy() {
    const token = document.getElementById("key-token").textContent;
    try {
      await navigator.clipboard.writeText(token);
      setText(this.result, "Copied.");
    } catch {
      window.getSelection().selectAllChildren(document.getElementById("key-token"));
      setText(this.result, "Selected: copy it with the keyboard.");
    }
  }

  async revoke(key) {
    try {
      await api("DELETE", `/admin/keys/${encodeURIComponent(key.id)}`);
      setText(this.result, `Revoked ${key.name}.`);
      this.created.hidden = true;
    } catch (e) {
      setText(this.result, `Could not revoke ${key.name}: ${e.message}`);
    }
    await this.refresh();
  }
}
