// The dashboard's entry point: sign in (or not, on an open loopback server), then poll the admin
// API every POLL_MS while the tab is visible and hand each answer to the panels.

import { api, ApiError, setCsrf } from "./api.js";
import { Fleet } from "./fleet.js";
import { setText } from "./format.js";
import { Traffic } from "./traffic.js";

const POLL_MS = 1500;

const $ = (id) => document.getElementById(id);
let timer = null;
let polling = false;

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
    start(info);
  } catch (e) {
    showSignIn(e.status === 401 ? "That is not the admin key." : e.message);
  }
}

async function signOut() {
  await api("DELETE", "/dashboard/session").catch(() => {});
  setCsrf(null);
  showSignIn();
}

const fleet = new Fleet(() => poll());
const traffic = new Traffic();

async function poll() {
  if (polling) return;
  polling = true;
  clearTimeout(timer);
  try {
    const status = await api("GET", "/admin/models/status");
    const now = Date.now() / 1000;
    fleet.update(status);
    traffic.fromCounters(status, now);
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

function start(info) {
  setCsrf(info.csrf);
  $("sign-in").hidden = true;
  $("panels").hidden = false;
  $("sign-out").hidden = !info.auth_required;
  poll();
}

document.addEventListener("visibilitychange", () => {
  // A hidden tab costs the server nothing; it catches up when shown again.
  if (!document.hidden && !$("panels").hidden) poll();
});
$("sign-in-form").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", signOut);

api("GET", "/dashboard/session")
  .then((info) => (info.signed_in ? start(info) : showSignIn()))
  .catch((e) => showSignIn(`cannot reach the server: ${e.message}`));
