// AIOrouter Dashboard: an account (dashboard token dt-...) manages its keys and sees its credit, usage and
// batches; an operator (admin token) sees each pool live (its batch lane too) and every account, and
// changes an account's plan, credit or status after a confirmation. No build step, no library.
"use strict";

const TOKEN_STORAGE = "aiorouter-dashboard-token";
const REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);
let timer = null;

async function call(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_STORAGE);
  const response = await fetch(path, {
    ...options,
    headers: { "Authorization": `Bearer ${token}`, "Content-Type": "application/json" },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = body.error ? body.error.message : `HTTP ${response.status}`;
    throw Object.assign(new Error(message), { status: response.status });
  }
  return body;
}

function showError(error) {
  $("error").textContent = error ? error.message : "";
  $("error").hidden = !error;
}

function emptyRow(columns, text) {
  const tr = document.createElement("tr");
  const td = document.createElement("td");
  td.colSpan = columns;
  td.className = "empty";
  td.textContent = text;
  tr.append(td);
  return tr;
}

// The rows of a table body, or one row saying there is nothing yet.
function fill(tbody, columns, rows, emptyText) {
  $(tbody).replaceChildren(...(rows.length ? rows : [emptyRow(columns, emptyText)]));
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

function utc(seconds) {
  return seconds ? new Date(seconds * 1000).toISOString().slice(0, 19).replace("T", " ") : "never";
}

function usd(micros) {
  return (micros / 1e6).toFixed(6);
}

function rateLimit(limit) {
  if (!limit) return "unknown plan";
  const tokens = limit.tokens_per_minute ? `, ${limit.tokens_per_minute} tokens/min` : "";
  return `${limit.requests_per_minute} requests/min${tokens}`;
}

// --- an account -----------------------------------------------------------------------------------------

async function loadAccount() {
  const [account, keys, usage, batches] = await Promise.all([
    call("/dashboard/api/account"), call("/dashboard/api/keys"), call("/dashboard/api/usage"),
    call("/dashboard/api/batches"),
  ]);
  $("who").textContent = account.name ? `${account.name} (${account.id})` : account.id;
  $("account-id").textContent = account.id;
  $("account-plan").textContent = account.plan;
  $("account-rate-limit").textContent = rateLimit(account.rate_limit);
  $("account-status").textContent = account.status;
  $("credit-available").textContent = `${account.credit.available_usd} USD`;
  $("credit-reserved").textContent = `${usd(account.credit.reserved_micros)} USD`;
  $("credit-spent").textContent = `${usd(account.credit.spent_micros)} USD`;

  fill("keys", 6, keys.data.map((key) => {
    let action = "";
    if (!key.revoked) {
      action = document.createElement("button");
      action.textContent = "Revoke";
      action.className = "revoke";
      action.dataset.keyId = key.id;
      action.addEventListener("click", () => revokeKey(key));
    }
    const tr = row([key.name || "(unnamed)", key.id, utc(key.created_at), utc(key.last_used_at),
      key.revoked ? "revoked" : "active", action]);
    tr.dataset.keyId = key.id;
    if (key.revoked) tr.className = "revoked";
    return tr;
  }), "No keys yet — create one above");

  fill("usage", 7, usage.data.map((u) => row([
    u.day, u.model, u.requests, u.errors, u.prompt_tokens, u.completion_tokens, usd(u.cost_micros),
  ])), "No usage yet — requests made with this account's keys show here");
  drawChart(usage);

  fill("batches", 5, batches.data.map((b) => {
    const counts = b.request_counts;
    const files = document.createElement("span");
    for (const [label, fileId] of [["output", b.output_file_id], ["errors", b.error_file_id]]) {
      if (!fileId) continue;
      const button = document.createElement("button");
      button.textContent = label;
      button.className = "download";
      button.addEventListener("click", guarded(() => download(fileId, `${b.id}_${label}.jsonl`)));
      files.append(button);
    }
    return row([b.id, b.status, utc(b.created_at), `${counts.completed} / ${counts.failed} / ${counts.total}`, files]);
  }), "No batches yet — create one with the Batch API (/v1/batches)");
}

async function download(fileId, name) {
  const token = sessionStorage.getItem(TOKEN_STORAGE);
  const response = await fetch(`/dashboard/api/files/${fileId}/content`, {
    headers: { "Authorization": `Bearer ${token}` },
  });
  if (!response.ok) throw new Error(`download failed: HTTP ${response.status}`);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = name;
  link.click();
  URL.revokeObjectURL(link.href);
}

// The usage chart: one bar per UTC day, days on the x axis, cost in USD on the y axis with round ticks.
const CHART = { width: 720, height: 240, left: 72, right: 12, top: 16, bottom: 48 };
const SVG_NS = "http://www.w3.org/2000/svg";

function svgElement(name, attributes, text) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

// A round step (1, 2 or 5 times a power of ten, at least one micro-USD) giving about `count` ticks.
function tickStep(top, count) {
  const raw = Math.max(top / count, 1e-6);
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].find((m) => m * power >= raw * 0.999999) * power;
}

function reportDays(usage) {
  const days = [];
  for (let d = new Date(`${usage.start}T00:00:00Z`); d <= new Date(`${usage.end}T00:00:00Z`);
    d.setUTCDate(d.getUTCDate() + 1)) days.push(d.toISOString().slice(0, 10));
  return days;
}

function drawChart(usage) {
  $("usage-chart-box").hidden = usage.data.length === 0;
  if (usage.data.length === 0) return;
  const days = reportDays(usage);
  const cost = Object.fromEntries(days.map((day) => [day, 0]));
  for (const u of usage.data) cost[u.day] += u.cost_micros / 1e6;
  const highest = Math.max(...Object.values(cost));
  const step = tickStep(highest, 4);
  const top = Math.max(step, Math.ceil(highest / step - 1e-9) * step);
  const decimals = Math.min(6, Math.max(0, Math.ceil(-Math.log10(step) - 1e-9)));
  const plotWidth = CHART.width - CHART.left - CHART.right;
  const plotHeight = CHART.height - CHART.top - CHART.bottom;
  const baseline = CHART.top + plotHeight;
  const y = (value) => baseline - (value / top) * plotHeight;
  const slot = plotWidth / days.length;
  const labelEvery = Math.ceil(days.length / 14);
  const shapes = [];

  for (let tick = 0; tick <= top + step / 2; tick += step) {
    const at = y(tick);
    shapes.push(svgElement("line", { class: "grid", x1: CHART.left, x2: CHART.width - CHART.right, y1: at, y2: at }));
    shapes.push(svgElement("text", { class: "tick-y", x: CHART.left - 6, y: at + 4, "text-anchor": "end" },
      tick.toFixed(decimals)));
  }
  days.forEach((day, i) => {
    const height = baseline - y(cost[day]);
    const bar = svgElement("rect", {
      class: "bar", "data-day": day, x: CHART.left + i * slot + slot * 0.15, y: baseline - height,
      width: slot * 0.7, height,
    });
    bar.append(svgElement("title", {}, `${day}: ${cost[day].toFixed(6)} USD`));
    shapes.push(bar);
    if (i % labelEvery === 0) {
      shapes.push(svgElement("text", {
        class: "tick-x", x: CHART.left + (i + 0.5) * slot, y: baseline + 16, "text-anchor": "middle",
      }, day.slice(5)));
    }
  });
  shapes.push(svgElement("line", { class: "axis", x1: CHART.left, x2: CHART.left, y1: CHART.top, y2: baseline }));
  shapes.push(svgElement("line", {
    class: "axis", x1: CHART.left, x2: CHART.width - CHART.right, y1: baseline, y2: baseline,
  }));
  shapes.push(svgElement("text", {
    class: "axis-title", id: "usage-chart-x-title", x: CHART.left + plotWidth / 2, y: CHART.height - 8,
    "text-anchor": "middle",
  }, "Day (UTC)"));
  const middle = CHART.top + plotHeight / 2;
  shapes.push(svgElement("text", {
    class: "axis-title", id: "usage-chart-y-title", x: 14, y: middle, "text-anchor": "middle",
    transform: `rotate(-90 14 ${middle})`,
  }, "Cost (USD)"));
  const svg = $("usage-chart");
  svg.setAttribute("aria-label", `Cost per day in USD from ${usage.start} to ${usage.end}; `
    + `highest ${highest.toFixed(6)} USD`);
  svg.replaceChildren(...shapes);
}

async function createKey(event) {
  event.preventDefault();
  const created = await call("/dashboard/api/keys", {
    method: "POST", body: JSON.stringify({ name: $("key-name").value }),
  });
  $("key-name").value = "";
  $("new-key-secret").textContent = created.secret;
  $("new-key").hidden = false;
  await loadAccount();
}

async function revokeKey(key) {
  if (!window.confirm(`Revoke key ${key.name || key.id}? Requests with it will be refused.`)) return;
  await call(`/dashboard/api/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
  await loadAccount();
}

// --- an operator ----------------------------------------------------------------------------------------

let plans = null; // the configured plans, loaded once per sign-in
let pending = null; // the account action the dialog is asking to confirm

async function loadOperator() {
  const [accounts, pools, planList] = await Promise.all([
    call("/admin/accounts?limit=1000"), call("/admin/pools/stats"), plans ? { data: plans } : call("/admin/plans"),
  ]);
  plans = planList.data;
  $("who").textContent = "operator";
  $("pools-window").textContent = `Requests, errors and time to first token over the last ${pools.window_minutes} `
    + "minutes and the current one; queued and running jobs now.";
  fill("pools", 11, pools.data.map(poolRow), "No pools yet");
  fill("accounts", 9, accounts.data.map((a) => {
    const tr = row([
      a.id, a.name, a.plan, rateLimit(a.rate_limit), a.status, a.credit.available_usd,
      usd(a.credit.reserved_micros), usd(a.credit.spent_micros), accountActions(a),
    ]);
    tr.dataset.accountId = a.id;
    if (a.status === "suspended") tr.className = "suspended";
    return tr;
  }), "No accounts yet — create one with: aiorouter accounts create");
}

function poolRow(p) {
  const workers = p.workers.length ? `${p.workers.length}: ${p.workers.map((w) => w.name).join(", ")}` : "0";
  const errorRate = p.error_rate === null ? "—" : `${(p.error_rate * 100).toFixed(1)}%`;
  const tr = row([
    p.configured ? p.pool : `${p.pool} (not configured)`, workers, p.queued, p.running,
    `${p.batch_lane.queued} queued, ${p.batch_lane.running} running`, p.requests_per_minute.toFixed(1), sparkline(p.minutes), errorRate, millis(p.ttft_p50_ms),
    millis(p.ttft_p99_ms), breakerList(p.breakers),
  ]);
  tr.dataset.pool = p.pool;
  if (p.error_rate !== null && p.error_rate >= 0.05) tr.cells[7].className = "bad";
  return tr;
}

function millis(ms) {
  if (ms === null) return "—";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

// Jobs that ended in each minute of the window, oldest first: a bar each, errors in red on top.
function sparkline(minutes) {
  const width = 8 * minutes.length;
  const height = 22;
  const highest = Math.max(1, ...minutes.map((m) => m.jobs));
  const svg = svgElement("svg", { class: "spark", viewBox: `0 0 ${width} ${height}`, width, height });
  minutes.forEach((m, i) => {
    const ok = ((m.jobs - m.errors) / highest) * height;
    const bad = (m.errors / highest) * height;
    const time = new Date(m.start * 1000).toISOString().slice(11, 16);
    const bar = svgElement("g", {});
    bar.append(svgElement("rect", { class: "slot", x: i * 8 + 1, y: height - 1, width: 6, height: 1 }));
    bar.append(svgElement("rect", { class: "ok", x: i * 8 + 1, y: height - ok, width: 6, height: ok }));
    bar.append(svgElement("rect", { class: "err", x: i * 8 + 1, y: height - ok - bad, width: 6, height: bad }));
    bar.append(svgElement("title", {}, `${time} UTC: ${m.jobs} jobs, ${m.errors} errors`));
    svg.append(bar);
  });
  return svg;
}

function breakerList(breakers) {
  const list = document.createElement("span");
  if (!breakers.length) list.textContent = "—";
  for (const b of breakers) {
    const badge = document.createElement("span");
    badge.className = `breaker ${b.status}`;
    badge.textContent = `${b.deployment.split("/").slice(1).join("/")}: ${b.status}`;
    badge.title = `${b.deployment}: ${b.status}, ${b.failures} recent failures, ${b.trips} trips`;
    list.append(badge);
  }
  return list;
}

function accountActions(account) {
  const cell = document.createElement("span");
  cell.className = "actions";
  const actions = [["plan", "Plan…"], ["credit", "Add credit…"],
    account.status === "suspended" ? ["resume", "Resume…"] : ["suspend", "Suspend…"]];
  for (const [kind, label] of actions) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    button.dataset.action = kind;
    button.addEventListener("click", () => openAction(kind, account));
    cell.append(button);
  }
  return cell;
}

// What each action asks, how its summary reads, and the admin API call it makes once confirmed.
const ACTIONS = {
  plan: {
    title: (a) => `Change the plan of ${a.id}`,
    text: (a) => `Now on ${a.plan} (${rateLimit(a.rate_limit)}). The new plan applies to its keys at once.`,
    summary: (a) => {
      const plan = plans.find((p) => p.name === $("action-plan").value);
      if (!plan || plan.name === a.plan) return "";
      return `Move ${a.id} from ${a.plan} to ${plan.name}: ${rateLimit(plan)}.`;
    },
    request: (a) => [`/admin/accounts/${encodeURIComponent(a.id)}`, "PATCH", { plan: $("action-plan").value }],
    done: (a) => `${a.id} is now on plan ${$("action-plan").value}.`,
  },
  credit: {
    title: (a) => `Add credit to ${a.id}`,
    text: (a) => `Available now: ${a.credit.available_usd} USD.`,
    summary: (a) => {
      const amount = $("action-amount").value.trim();
      return /^\d+(\.\d{1,6})?$/.test(amount) && Number(amount) > 0 ? `Grant ${amount} USD to ${a.id}.` : "";
    },
    request: (a) => [`/admin/accounts/${encodeURIComponent(a.id)}/credits`, "POST",
      { amount_usd: $("action-amount").value.trim(), reason: $("action-reason").value.trim() }],
    done: (a) => `Granted ${$("action-amount").value.trim()} USD to ${a.id}.`,
  },
  suspend: {
    title: (a) => `Suspend ${a.id}?`,
    text: () => "Requests with its API keys are refused (401 account_suspended) until it is resumed; "
      + "requests already running finish. Its dashboard still signs in.",
    summary: (a) => `Suspend ${a.id}.`,
    request: (a) => [`/admin/accounts/${encodeURIComponent(a.id)}`, "PATCH", { status: "suspended" }],
    done: (a) => `${a.id} is suspended.`,
  },
  resume: {
    title: (a) => `Resume ${a.id}?`,
    text: () => "Its API keys work again at once.",
    summary: (a) => `Resume ${a.id}.`,
    request: (a) => [`/admin/accounts/${encodeURIComponent(a.id)}`, "PATCH", { status: "active" }],
    done: (a) => `${a.id} is active again.`,
  },
};

function openAction(kind, account) {
  pending = { action: ACTIONS[kind], account };
  $("action-dialog").dataset.action = kind;
  $("action-title").textContent = pending.action.title(account);
  $("action-text").textContent = pending.action.text(account);
  $("action-plan-field").hidden = kind !== "plan";
  $("action-credit-fields").hidden = kind !== "credit";
  $("action-plan").replaceChildren(...plans.map((p) => {
    const option = document.createElement("option");
    option.value = p.name;
    option.textContent = `${p.name} — ${rateLimit(p)}`;
    option.selected = p.name === account.plan;
    return option;
  }));
  $("action-amount").value = "";
  $("action-reason").value = "";
  updateSummary();
  $("action-dialog").showModal();
}

function updateSummary() {
  if (!pending) return;
  $("action-error").hidden = true; // the last refusal was about what has just been changed
  const summary = pending.action.summary(pending.account);
  $("action-summary").textContent = summary;
  $("action-confirm").disabled = !summary;
}

async function confirmAction(event) {
  event.preventDefault();
  if (!pending || $("action-confirm").disabled) return;
  const { action, account } = pending;
  const [path, method, body] = action.request(account);
  $("action-confirm").disabled = true;
  try {
    await call(path, { method, body: JSON.stringify(body) });
  } catch (error) {
    $("action-error").textContent = error.message;
    $("action-error").hidden = false;
    $("action-confirm").disabled = false;
    return;
  }
  $("operator-notice").textContent = action.done(account);
  $("operator-notice").hidden = false;
  closeAction();
  await loadOperator();
}

function closeAction() {
  pending = null;
  if ($("action-dialog").open) $("action-dialog").close();
}

// --- signing in and out ---------------------------------------------------------------------------------

function isAccountToken(token) {
  return token.startsWith("dt-");
}

async function refresh() {
  const token = sessionStorage.getItem(TOKEN_STORAGE);
  try {
    await (isAccountToken(token) ? loadAccount() : loadOperator());
    showError(null);
  } catch (error) {
    if (error.status === 401 || error.status === 404) return signOut(error);
    showError(error);
  }
}

async function signIn(token) {
  sessionStorage.setItem(TOKEN_STORAGE, token);
  const account = isAccountToken(token);
  $("sign-in-view").hidden = true;
  $("account-view").hidden = !account;
  $("operator-view").hidden = account;
  $("refresh").hidden = false;
  $("sign-out").hidden = false;
  await refresh();
  clearInterval(timer);
  timer = setInterval(refresh, REFRESH_MS);
}

function signOut(error) {
  clearInterval(timer);
  sessionStorage.removeItem(TOKEN_STORAGE);
  closeAction();
  plans = null;
  for (const id of ["account-view", "operator-view", "refresh", "sign-out", "new-key", "operator-notice"]) {
    $(id).hidden = true;
  }
  $("sign-in-view").hidden = false;
  $("who").textContent = "";
  showError(error instanceof Error ? error : null);
}

function guarded(handler) {
  return (event) => handler(event).catch(showError);
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", guarded(async (event) => {
    event.preventDefault();
    await signIn($("token").value.trim());
    $("token").value = "";
  }));
  $("create-key-form").addEventListener("submit", guarded(createKey));
  $("copy-key").addEventListener("click", guarded(async () => {
    await navigator.clipboard.writeText($("new-key-secret").textContent);
    $("copy-key").textContent = "Copied";
  }));
  $("dismiss-key").addEventListener("click", () => {
    $("new-key").hidden = true;
    $("new-key-secret").textContent = "";
    $("copy-key").textContent = "Copy";
  });
  $("action-form").addEventListener("submit", guarded(confirmAction));
  $("action-cancel").addEventListener("click", closeAction);
  $("action-dialog").addEventListener("close", () => { pending = null; });
  for (const id of ["action-plan", "action-amount"]) $(id).addEventListener("input", updateSummary);
  $("refresh").addEventListener("click", guarded(refresh));
  $("sign-out").addEventListener("click", () => signOut(null));
  const saved = sessionStorage.getItem(TOKEN_STORAGE);
  if (saved) signIn(saved).catch(showError);
});
