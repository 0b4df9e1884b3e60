// The dashboard's entry point: sign in (or not, on an open loopback server), find which admin
// APIs this server offers, then poll every POLL_MS while the tab is visible and hand each answer
// to the panels. A hidden tab polls nothing.

import { api, ApiError, offered, setCsrf } from "./api.js";
import { Fleet } from "./fleet.js";
import { setText } from "./format.js";
import { Keys } from "./keys.js";
import { Logs } from "./logs.js";
import { CounterSource, drawTraffic } from "./traffic.js";
import { UsageSource } from "./usage.js";

const POLL_MS = 1500;
const USAGE_EVERY = 2;     // polls between usage reads (each one makes the server write what is queued)
const KEYS_EVERY = 10;     // polls between key list reads (their last use and request counts)
const CATALOG_EVERY = 10;  // polls between catalog reads (it changes on a rescan or a setting)

const $ = (id) => document.getElementById(id);
// After an action, the next poll reads everything afresh.
const fleet = new Fleet(() => { polls = 0; poll(); });
const logs = new Logs();
const keys = new Keys();
let traffic = null;        // CounterSource or UsageSource, chosen at sign-in
let features = null;       // {logs, keys}, found at the first poll
let registry;              // the catalog, where the server has one
let timer = null;
let polling = false;
let polls = 0;

function showSignIn(message = "") {
  clearTimeout(timer);
  timer = null;
  $("panels").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  setText($("sign-in-error"), message);
  $("admin-key").focus();
}

async function signIn(event) {
  event.preventDefault();
  try {
    const info = await api("POST", "/dashboard/session", { key: $("admin-key").value });
    $("admin-key").value = "";
    await start(info);
  } catch (e) {
    showSignIn(e.status === 401 ? "That is not the admin key." : e.message);
  }
}

async function signOut() {
  await api("DELETE", "/dashboard/session").catch(() => {});
  setCsrf(null);
  showSignIn();
}

// An optional panel that fails keeps what it last showed and stops nothing else; 401 ends the session.
async function panel(work) {
  try {
    await work();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) throw e;
  }
}

async function update(status, now) {
  if (!features) {
    registry = await offered("/admin/models/registry");
    features = { logs: await logs.detect(status.models), keys: await keys.detect(), catalog: registry !== undefined };
  } else if (features.catalog && polls % CATALOG_EVERY === 0) {
    await panel(async () => { registry = await api("GET", "/admin/models/registry"); });
  }
  fleet.update(status, registry);
  if (traffic instanceof UsageSource) {
    if (polls % USAGE_EVERY === 0) await panel(async () => drawTraffic(await traffic.update(now), now));
  } else {
    drawTraffic(traffic.update(status, now), now);
  }
  if (features.logs) await panel(() => logs.update(status));
  if (features.keys && polls % KEYS_EVERY === 0) await panel(() => keys.refresh());
}

async function poll() {
  if (polling) return;
  polling = true;
  clearTimeout(timer);
  try {
    await update(await api("GET", "/admin/models/status"), Date.now() / 1000);
    polls += 1;
    $("connection").classList.remove("offline");
    setText($("connection"), `updated ${new Date().toLocaleTimeString([], { hour12: false })}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      polling = false;
      showSignIn("Your session has ended; sign in again.");
      return;
    }
    $("connection").classList.add("offline");
    setText($("connection"), `cannot reach the server: ${e.message}`);
  }
  polling = false;
  if (!document.hidden) timer = setTimeout(poll, POLL_MS);
}

async function start(info) {
  setCsrf(info.csrf);
  $("sign-in").hidden = true;
  $("panels").hidden = false;
  $("sign-out").hidden = !info.auth_required;
  features = null;
  polls = 0;
  traffic = (await offered("/admin/usage?limit=1")) === undefined ? new CounterSource() : new UsageSource();
  await poll();
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && !$("panels").hidden) poll();
});
$("sign-in-form").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", signOut);

api("GET", "/dashboard/session")
  .then((info) => (info.signed_in ? start(info) : showSignIn()))
  .catch((e) => showSignIn(`cannot reach the server: ${e.message}`));
