// tollgate's dashboard: totals and the most limited clients from the admin API, a live
// chart and event list from the event stream (`GET /events`, Server-Sent Events read with
// fetch so that the admin token can go in a header), the rules in force with their source,
// editable, and a "try a key" tool. No dependencies: plain DOM and a canvas.
"use strict";

const SECONDS_KEPT = 300; // the chart's last five minutes
const EVENTS_KEPT = 200;
const TOKEN_KEY = "tollgate-admin-token";

const $ = (id) => document.getElementById(id);

// --- The admin API, with the token when one is needed --------------------------------

let token = sessionStorage.getItem(TOKEN_KEY) || "";
let askingForToken = null;

function headers(extra) {
  const h = Object.assign({}, extra);
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

function askForToken() {
  if (!askingForToken) {
    askingForToken = new Promise((resolve) => {
      const dialog = $("token-dialog");
      $("token-input").value = "";
      dialog.onclose = () => {
        if (dialog.returnValue === "ok") {
          token = $("token-input").value.trim();
          sessionStorage.setItem(TOKEN_KEY, token);
        }
        askingForToken = null;
        resolve();
      };
      dialog.showModal();
    });
  }
  return askingForToken;
}

// A JSON request; asks for the token once on a 401 and tries again.
async function api(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    const init = { method, headers: headers(body === undefined ? {} : { "content-type": "application/json" }) };
    if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
    const response = await fetch(path, init);
    if (response.status === 401 && attempt === 0) {
      await askForToken();
      continue;
    }
    let json = null;
    try { json = await response.json(); } catch (_) { /* not JSON */ }
    return { status: response.status, headers: response.headers, json };
  }
}

// What an error answer says: FastAPI-style `detail`, a string or a list of problems.
function problem(json) {
  if (!json || json.detail === undefined) return "no answer";
  if (typeof json.detail === "string") return json.detail;
  if (Array.isArray(json.detail)) {
    return json.detail.map((d) => (d.loc ? d.loc.join(".") + ": " : "") + d.msg).join("\n");
  }
  return JSON.stringify(json.detail);
}

// --- Totals and the most limited clients ------------------------------------------------

async function refreshStats() {
  const { status, json } = await api("GET", "/admin/stats?top=10");
  if (status !== 200) return;
  $("total-requests").textContent = json.total_requests.toLocaleString();
  $("total-allowed").textContent = json.allowed.toLocaleString();
  $("total-denied").textContent = json.denied.toLocaleString();
  $("block-rate").textContent = (json.block_rate * 100).toFixed(1) + "%";
  const body = $("limited").tBodies[0];
  body.replaceChildren(...json.most_limited.map((c) => row([c.client, c.denied.toLocaleString()])));
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell); else td.textContent = cell;
    tr.append(td);
  }
  return tr;
}

// --- Rules: listed with their source, set and removed through the admin API ------------

async function refreshRules() {
  const { status, json } = await api("GET", "/admin/rules");
  if (status !== 200) return;
  const body = $("rules").tBodies[0];
  body.replaceChildren(...json.rules.map((entry) => {
    const code = document.createElement("code");
    code.textContent = JSON.stringify(entry.rule);
    let remove = "";
    if (entry.origin === "runtime") {
      remove = document.createElement("button");
      remove.type = "button";
      remove.className = "small";
      remove.textContent = "remove";
      remove.onclick = () => removeEntry(entry.target);
    }
    // The API's own word: a base rule comes from the rules file, or without one from
    // DEFAULT_RATE_LIMIT, so "file" would not always be true.
    const tr = row([entry.target, entry.origin, code, remove]);
    tr.dataset.target = entry.target;
    return tr;
  }));
}

async function removeEntry(target) {
  const path = target.startsWith("client:")
    ? "/admin/rules/clients/" + target.slice("client:".length)
    : "/admin/rules/routes/" + target.slice("rule:/".length);
  const { status, json } = await api("DELETE", path);
  $("rule-error").textContent = status === 200 ? "" : problem(json);
  refreshRules();
}

$("rule-kind").onchange = () => {
  $("rule-client-label").hidden = $("rule-kind").value !== "client";
};

$("rule-form").onsubmit = async (event) => {
  event.preventDefault();
  const text = $("rule-json").value;
  let answer;
  if ($("rule-kind").value === "client") {
    const client = $("rule-client").value.trim();
    answer = await api("PUT", "/admin/rules/clients/" + client, text);
  } else {
    answer = await api("POST", "/admin/rules/routes", text);
  }
  $("rule-error").textContent = answer.status === 200 ? "" : problem(answer.json);
  $("rule-form").dataset.lastStatus = String(answer.status);
  refreshRules();
};

// --- Try a key -------------------------------------------------------------------------

$("try-form").onsubmit = async (event) => {
  event.preventDefault();
  const body = { identifier: $("try-key").value.trim() };
  const path = $("try-path").value.trim();
  if (path) body.path = path;
  const response = await fetch("/check", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const lines = ["HTTP " + response.status];
  for (const name of ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after"]) {
    const value = response.headers.get(name);
    if (value !== null) lines.push(name + ": " + value);
  }
  lines.push("", await response.text());
  $("try-result").textContent = lines.join("\n");
  $("try-result").dataset.status = String(response.status);
};

// --- The event stream ----------------------------------------------------------------

// One entry a second, summed over the instances: {second, rules: {rule: {allowed, denied}}}.
// Each instance sends a summary a second, each on its own clock's tick: a summary counts in
// the second it arrives (the browser's clock), however its instance's clock is set.
const series = [];
// Each instance's last summary: name -> {at (local time it came), allowed, denied}.
const instances = new Map();
const INSTANCE_GONE_MS = 5000;
// Bounds on what the page lists, whatever the stream says.
const RULES_LISTED = 500;
const INSTANCES_LISTED = 100;
const knownRules = new Set();

function connection(state, text) {
  $("connection").dataset.state = state;
  $("connection").textContent = text;
}

async function streamEvents() {
  for (let wait = 1000; ; wait = Math.min(wait * 2, 10000)) {
    try {
      const response = await fetch("/events", { headers: headers({ accept: "text/event-stream" }) });
      if (response.status === 401) {
        connection("error", "needs the admin token");
        await askForToken();
        continue;
      }
      if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
      connection("live", "live");
      wait = 1000;
      await readEvents(response.body.getReader());
    } catch (error) {
      connection("error", "disconnected");
    }
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

// Server-Sent Events: `data:` lines, an event ended by a blank line.
async function readEvents(reader) {
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).replace(/\r$/, "");
      buffer = buffer.slice(newline + 1);
      if (line === "") {
        if (data.length) handle(data.join("\n"));
        data = [];
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).replace(/^ /, ""));
      }
    }
  }
}

function handle(text) {
  let event;
  try { event = JSON.parse(text); } catch (_) { return; }
  switch (event.type) {
    case "summary": return summary(event);
    case "decision": return listEvent(describeDecision(event), event.allowed ? "" : "denied");
    case "rule_change":
      listEvent("rule changed: " + (event.target || JSON.stringify(event)), "notice");
      return refreshRules();
    case "lagged": return listEvent("missed " + event.missed + " events (the stream fell behind)", "notice");
    default: return listEvent(text, "notice");
  }
}

function describeDecision(e) {
  const outcome = e.allowed ? "allowed" : "denied";
  const remaining = e.remaining === null || e.remaining === undefined ? "" : " remaining " + e.remaining;
  const where = instances.size > 1 && e.instance ? ` at ${e.instance}` : "";
  return `${e.client} ${outcome} on ${e.rule}${remaining}` + (e.outcome ? ` (${e.outcome})` : "") + where;
}

function listEvent(text, kind) {
  if ($("events-pause").checked) return;
  const item = document.createElement("li");
  if (kind) item.className = kind;
  item.textContent = new Date().toLocaleTimeString() + "  " + text;
  const list = $("events");
  list.prepend(item);
  while (list.children.length > EVENTS_KEPT) list.lastChild.remove();
}

function summary(event) {
  const rules = event.rules || {};
  const name = String(event.instance || "");
  const entry = secondNow();
  let allowed = 0;
  let denied = 0;
  for (const [rule, calls] of Object.entries(rules)) {
    const sum = entry.rules[rule] || (entry.rules[rule] = { allowed: 0, denied: 0 });
    sum.allowed += Number(calls.allowed) || 0;
    sum.denied += Number(calls.denied) || 0;
    allowed += Number(calls.allowed) || 0;
    denied += Number(calls.denied) || 0;
    if (!knownRules.has(rule) && knownRules.size < RULES_LISTED) {
      knownRules.add(rule);
      const option = document.createElement("option");
      option.value = option.textContent = rule;
      $("chart-rule").append(option);
    }
  }
  // `denied` already counts the refusals not sent one by one (suppressed_denied).
  instances.set(name, { at: Date.now(), allowed, denied });
  while (instances.size > INSTANCES_LISTED) instances.delete(instances.keys().next().value);
  showInstances();
  draw();
}

// The entry of the current second, made if need be; entries older than the chart are dropped.
function secondNow() {
  const second = Math.floor(Date.now() / 1000);
  let entry = series[series.length - 1];
  if (!entry || entry.second !== second) {
    entry = { second, rules: {} };
    series.push(entry);
    while (series.length && series[0].second <= second - SECONDS_KEPT) series.shift();
  }
  return entry;
}

// The instances heard from lately, with their last second; the live rate sums them.
function showInstances() {
  const now = Date.now();
  for (const [name, last] of instances) if (now - last.at > INSTANCE_GONE_MS) instances.delete(name);
  let allowed = 0;
  let denied = 0;
  const line = $("instances");
  line.replaceChildren();
  for (const [name, last] of [...instances].sort()) {
    allowed += last.allowed;
    denied += last.denied;
    const item = document.createElement("span");
    item.className = "instance";
    item.textContent = `${name}: ${last.allowed} / ${last.denied}`;
    line.append(item);
  }
  $("live-rate").textContent = allowed + " / " + denied;
  $("live-instances").textContent = String(instances.size);
  line.dataset.names = JSON.stringify([...instances.keys()].sort());
}

// --- The chart: allowed and denied per second, one rule or all ----------------------------

function point(entry, rule) {
  let allowed = 0;
  let denied = 0;
  for (const [name, calls] of Object.entries(entry.rules)) {
    if (rule && name !== rule) continue;
    allowed += calls.allowed;
    denied += calls.denied;
  }
  return { allowed, denied };
}

function draw() {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const rule = $("chart-rule").value;
  // Every second from the oldest kept to the newest, none missing.
  const points = [];
  if (series.length) {
    const first = series[0].second;
    const bySecond = new Map(series.map((e) => [e.second, e]));
    for (let second = first; second <= series[series.length - 1].second; second++) {
      const entry = bySecond.get(second);
      points.push(entry ? point(entry, rule) : { allowed: 0, denied: 0 });
    }
  }
  const max = Math.max(4, ...points.map((p) => Math.max(p.allowed, p.denied)));
  const left = 40;
  const bottom = height - 18;
  const style = getComputedStyle(document.documentElement);
  g.strokeStyle = style.getPropertyValue("--line");
  g.fillStyle = style.getPropertyValue("--muted");
  g.font = "11px system-ui, sans-serif";
  for (const fraction of [0, 0.5, 1]) {
    const y = bottom - fraction * (bottom - 8);
    g.beginPath(); g.moveTo(left, y); g.lineTo(width, y); g.stroke();
    g.fillText(String(Math.round(max * fraction)), 4, y + 4);
  }
  g.fillText("last " + SECONDS_KEPT / 60 + " min", left, height - 4);
  const x = (i) => left + (i + SECONDS_KEPT - points.length) * (width - left) / (SECONDS_KEPT - 1);
  const y = (v) => bottom - v / max * (bottom - 8);
  for (const [key, color] of [["allowed", "--ok"], ["denied", "--bad"]]) {
    g.strokeStyle = style.getPropertyValue(color);
    g.lineWidth = 2;
    g.beginPath();
    points.forEach((p, i) => (i ? g.lineTo(x(i), y(p[key])) : g.moveTo(x(i), y(p[key]))));
    g.stroke();
  }
  // What a test (or a curious reader) can check: the points drawn and the last one.
  const last = points[points.length - 1] || { allowed: 0, denied: 0 };
  canvas.dataset.points = String(points.length);
  canvas.dataset.lastAllowed = String(last.allowed);
  canvas.dataset.lastDenied = String(last.denied);
  canvas.dataset.totalDenied = String(points.reduce((sum, p) => sum + p.denied, 0));
  canvas.dataset.totalAllowed = String(points.reduce((sum, p) => sum + p.allowed, 0));
}

$("chart-rule").onchange = draw;
window.addEventListener("resize", draw);

$("token-button").onclick = async () => {
  await askForToken();
  refreshStats();
  refreshRules();
};
$("token-cancel").onclick = () => $("token-dialog").close("cancel");

refreshStats();
refreshRules();
setInterval(refreshStats, 2000);
draw();
streamEvents();
