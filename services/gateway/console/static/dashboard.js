// Consentry dashboard: polls /dashboard/data and draws it. No framework, no network but ours.
// Text only ever goes through textContent, so nothing from the data is parsed as HTML.
"use strict";

const REFRESH_MS = 2000;
const LEVEL_TEXT = { ok: "All good", warn: "Needs attention", bad: "Problem" };
const STATE_TEXT = { ready: "Ready", not_ready: "Not ready", down: "Unreachable" };
const SVG = "http://www.w3.org/2000/svg";

const byId = (id) => document.getElementById(id);

function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

function setLevel(el, level) {
  if (!el) return;
  for (const cls of [...el.classList]) if (cls.startsWith("level-")) el.classList.remove(cls);
  el.classList.add(`level-${level || "unknown"}`);
}

function count(v) {
  return v === null || v === undefined ? "—" : Math.round(v).toLocaleString("en");
}

function plural(n, one, many) {
  return n === 1 ? one : many;
}

function perSecond(v) {
  if (v === null || v === undefined) return "—";
  if (v === 0) return "0";
  if (v < 10) return v.toFixed(1);
  return Math.round(v).toLocaleString("en");
}

function share(v) {
  return v === null || v === undefined ? "—" : `${(v * 100).toFixed(v < 0.1 ? 1 : 0)} %`;
}

function duration(s) {
  if (s === null || s === undefined) return "—";
  if (s === 0) return "0 s";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.round((s % 86400) / 3600)} h`;
}

function ago(s) {
  return s === null || s === undefined ? "never" : `${duration(Math.max(s, 0))} ago`;
}

function bytes(b) {
  if (b === null || b === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i += 1; }
  return `${b.toFixed(i === 0 || b >= 100 ? 0 : 1)} ${units[i]}`;
}

// A sparkline with its own text alternative: what a sighted reader gets from the line.
function sparkline(container, values, span, what) {
  if (!container) return;
  container.replaceChildren();
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 120 36");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  let label = `${what}: no history yet`;
  if (values.length >= 2) {
    const max = Math.max(...values, 1e-9) * 1.15; // headroom: a steady flow is not drawn as a ceiling
    const step = 120 / (values.length - 1);
    const points = values.map((v, i) => `${(i * step).toFixed(1)},${(34 - (v / max) * 32).toFixed(1)}`);
    const area = document.createElementNS(SVG, "polygon");
    area.setAttribute("points", `0,36 ${points.join(" ")} 120,36`);
    area.setAttribute("class", "area");
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("class", "line");
    svg.append(area, line);
    label = `${what} over the last ${Math.round(span)} seconds: between ${perSecond(Math.min(...values))} and ${perSecond(Math.max(...values))} per second, now ${perSecond(values[values.length - 1])}`;
  }
  const title = document.createElementNS(SVG, "title");
  title.textContent = label;
  svg.prepend(title);
  svg.setAttribute("aria-label", label);
  container.append(svg);
}

function renderHealth(health) {
  for (const h of health) {
    const li = document.querySelector(`#health [data-service="${h.service}"]`);
    if (!li) continue;
    setLevel(li, h.level);
    li.dataset.state = h.state;
    setText(li.querySelector(".state"), STATE_TEXT[h.state] || h.state);
    setText(li.querySelector(".detail"), h.detail);
  }
}

function renderFlow(d) {
  const t = d.throughput;
  const totals = d.totals;
  for (const key of ["posts_in", "accepted", "dropped", "rejected"]) {
    setText(byId(`rate-${key}`), perSecond(t ? t[key] : null));
    // A colour says "look here": nothing flowing in a category is not news.
    byId(`rate-${key}`).closest(".card").classList.toggle("idle", !t || t[key] === 0);
    sparkline(byId(`spark-${key}`), d.history[key] || [], d.history.ago_s[0] || 0, { posts_in: "Posts in", accepted: "Accepted", dropped: "Kept out", rejected: "Rejected" }[key]);
  }
  setText(byId("rate-window"), t ? `· per second, last ${t.window_s} s` : "");
  setText(byId("total-posts_in"), count(totals.posts_in));
  setText(byId("total-accepted"), count(totals.accepted));
  setText(byId("total-rejected"), count(totals.rejected));
  setText(byId("share-dropped"), share(t ? t.drop_share : null));
  setText(byId("share-rejected"), share(t ? t.reject_share : null));

  const reasons = totals.dropped_by_reason || {};
  const all = Object.values(reasons).reduce((a, b) => a + (b || 0), 0);
  for (const li of document.querySelectorAll("#drops li")) {
    const reason = li.dataset.reason;
    const total = reasons[reason];
    setText(li.querySelector(".rate"), perSecond(t ? t.dropped_by_reason[reason] : null));
    setText(li.querySelector(".total"), count(total));
    li.querySelector(".bar > span").style.width = `${all > 0 ? ((total || 0) / all) * 100 : 0}%`;
  }
}

function renderObjections(d) {
  const b = d.backlog;
  const card = byId("backlog");
  setLevel(card, b.level);
  setText(byId("backlog-age"), b.age_s === null ? "—" : b.objections === 0 ? "none" : duration(b.age_s));
  setText(byId("backlog-count"), count(b.objections));
  setText(byId("total-purges"), count(d.totals.purges));
  setText(byId("total-rows_purged"), count(d.totals.rows_purged));
  setText(byId("total-objections"), count(d.totals.objections));
  setText(byId("word-rows"), plural(d.totals.rows_purged, "post", "posts"));
  setText(byId("word-objections"), plural(d.totals.objections, "objection", "objections"));
  for (const [key, id] of [["enforce", "latency-enforce"], ["purge", "latency-purge"]]) {
    const l = d.latency[key];
    const el = byId(id);
    for (const p of ["p50", "p95", "p99"]) setText(el.querySelector(`.${p}`), duration(l[p]));
    setText(el.querySelector(".count"), count(l.count));
    setText(el.querySelector(".word"), plural(l.count, "objection", "objections"));
    setText(el.querySelector(".window"), l.window);
  }
}

function renderNotices(d) {
  const n = d.notices;
  setText(byId("notices-waiting_posts"), count(n.waiting_posts));
  setText(byId("word-waiting"), plural(n.waiting_posts, "post", "posts"));
  setText(byId("notices-waiting_users"), count(n.waiting_users));
  setText(byId("word-users"), plural(n.waiting_users, "user", "users"));
  setText(byId("notices-deferred"), count(n.deferred));
  setText(byId("notices-released"), count(n.released));
  setText(byId("rate-released"), perSecond(d.throughput ? d.throughput.released : null));
  setText(byId("notices-dropped"), count(n.dropped));
  // A colour says "look here": nothing released or dropped yet is not news.
  byId("notices-released").closest(".card").classList.toggle("idle", !n.released);
  byId("notices-dropped").closest(".card").classList.toggle("idle", !n.dropped);
  setText(byId("notices-bytes"), bytes(n.bytes));
  setLevel(byId("notices-memory"), n.level);
  setText(byId("notices-full"), n.bytes === null ? "—" : n.full ? "index full: newly deferred posts wait unindexed until releases free room (other posts are read)" : "under its bound");
}

function renderLag(lag) {
  const body = byId("lag");
  const rows = lag.map((entry) => {
    const tr = document.createElement("tr");
    setLevel(tr, entry.level);
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = entry.service;
    const total = document.createElement("td");
    total.className = "num";
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.setAttribute("aria-hidden", "true");
    total.append(dot, document.createTextNode(` ${count(entry.total)}`));
    const parts = document.createElement("td");
    parts.className = "parts";
    const behind = entry.partitions.filter((p) => p.lag > 0);
    if (!entry.partitions.length) parts.textContent = entry.total === null ? "not reporting" : "no partitions reported";
    else if (!behind.length) parts.textContent = `${entry.partitions.length} partitions, all caught up`;
    else parts.textContent = behind.map((p) => `${p.topic}/${p.partition}: ${count(p.lag)}`).join(" · ");
    tr.append(name, total, parts);
    return tr;
  });
  body.replaceChildren(...rows);
}

function renderStore(d) {
  const s = d.store;
  setText(byId("store-version"), count(s.version));
  setText(byId("store-bytes"), s.bytes === null ? "—" : `${bytes(s.bytes)} in ${count(s.files)} ${plural(s.files, "file", "files")}`);
  setText(byId("total-stored"), count(d.totals.stored));
  setText(byId("store-last-purge"), s.last_purge_ago_s === null ? "none since the sink started" : ago(s.last_purge_ago_s));
  setText(byId("store-last-vacuum"), ago(s.last_vacuum_ago_s));
  setText(byId("store-vacuum-runs"), count(s.vacuum_runs));
  setText(byId("total-consent_users"), count(d.totals.consent_users));
}

function renderProof(d) {
  const r = d.proof.reconcile;
  const l = d.proof.lineage;
  setText(byId("proof-reconcile-last"), r.last_ago_s === null ? "none yet" : ago(r.last_ago_s));
  setText(byId("proof-reconcile-users"), count(r.last_users));
  const rows = byId("proof-reconcile-rows");
  setText(rows, r.last_rows_purged === null ? "—" : `${count(r.last_rows_purged)} last pass, ${count(r.rows_purged_total)} in all`);
  setLevel(rows, r.level);
  setText(byId("proof-reconcile-runs"), count(r.runs));
  setText(byId("proof-lineage-snapshots"), count(l.snapshots));
  setText(byId("proof-lineage-trained"), count(l.purged_users_trained_on));
}

function renderRejects(rejects) {
  const body = byId("rejects");
  if (!rejects.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 4;
    td.className = "empty";
    td.textContent = "None yet.";
    tr.append(td);
    body.replaceChildren(tr);
    return;
  }
  body.replaceChildren(...rejects.map((r) => {
    const tr = document.createElement("tr");
    const when = document.createElement("td");
    const time = document.createElement("time");
    time.dateTime = r.received_at || "";
    time.textContent = r.received_at ? new Date(r.received_at).toLocaleTimeString("en-GB") : "—";
    when.append(time);
    const reason = document.createElement("td");
    const code = document.createElement("span");
    code.className = "code";
    code.textContent = r.reason_code || "unknown";
    const detail = document.createElement("span");
    detail.className = "detail";
    const text = r.reason || "";
    detail.textContent = text.startsWith(`${r.reason_code}: `) ? text.slice(r.reason_code.length + 2) : text;
    reason.append(code, " ", detail);
    const source = document.createElement("td");
    source.className = "mono";
    source.textContent = `${r.topic ?? "?"} · p${r.partition ?? "?"} · @${r.offset ?? "?"}`;
    const size = document.createElement("td");
    size.className = "num";
    size.textContent = bytes(r.value_bytes);
    tr.append(when, reason, source, size);
    return tr;
  }));
}

function render(d) {
  const banner = byId("overall");
  setLevel(banner, d.overall);
  const down = d.health.filter((h) => h.state !== "ready").map((h) => h.service);
  setText(byId("overall-text"), down.length ? `${LEVEL_TEXT[d.overall]}: ${down.join(", ")} not ready` : LEVEL_TEXT[d.overall]);
  renderHealth(d.health);
  renderFlow(d);
  renderNotices(d);
  renderObjections(d);
  renderLag(d.lag);
  renderStore(d);
  renderProof(d);
  renderRejects(d.rejects);
  setText(byId("updated"), `updated ${new Date(d.generated_at_us / 1000).toLocaleTimeString("en-GB")}`);
  document.body.dataset.loaded = "true";
}

// An operator's token (consentry:admin). `consentry up` prints the page's address with one in
// the fragment (#token=...), which browsers never send to a server; it is moved to this tab's
// sessionStorage and wiped from the address bar at once.
const TOKEN_KEY = "consentry-dashboard-token";

function takeTokenFromAddress() {
  const match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (!match) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
  history.replaceState(null, "", window.location.pathname + window.location.search);
}

function askForToken(message) {
  const form = byId("sign-in");
  if (form) form.hidden = false;
  setLevel(byId("overall"), "warn");
  setText(byId("overall-text"), message);
}

function setUpSignIn() {
  const form = byId("sign-in");
  if (!form) return;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = byId("sign-in-token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    byId("sign-in-token").value = "";
    form.hidden = true;
    setText(byId("overall-text"), "Connecting…");
  });
}

async function refresh() {
  try {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      askForToken("Sign in with an operator's token to see the dashboard");
      return;
    }
    const response = await fetch("/dashboard/data", { cache: "no-store", headers: { Authorization: `Bearer ${token}` } });
    if (response.status === 401 || response.status === 403) {
      sessionStorage.removeItem(TOKEN_KEY);
      askForToken(response.status === 401 ? "The token was refused (expired or not valid): sign in again" : "This token has no consentry:admin scope: sign in with an operator's token");
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
    document.body.classList.remove("stale");
  } catch (err) {
    document.body.classList.add("stale");
    setLevel(byId("overall"), "bad");
    setText(byId("overall-text"), `Dashboard data unavailable (${err.message}); retrying`);
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

takeTokenFromAddress();
setUpSignIn();
refresh();
