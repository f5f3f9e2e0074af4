// The jd-proxy dashboard: polls this proxy's /api/v1/ every 2 s and draws what it reads. No
// library: the chart is our own SVG, and every text that came from the API (worker names and user
// agents are whatever the miners sent) goes in through textContent, never as HTML.
"use strict";

const REFRESH_MS = 2000;
// A round that takes longer than this is abandoned, so a stuck proxy shows as an error instead of
// a frozen page.
const FETCH_TIMEOUT_MS = 5000;
// An ASIC with no share for this long is silent (the alert rule uses the same 10 min).
const SILENT_SECS = 600;
// An ASIC whose last share is this many expected share intervals old is slow: at its own hashrate
// and difficulty the chance of such a gap by bad luck alone is e^-10, about 1 in 22,000.
const SLOW_INTERVALS = 10;
// ... but never for gaps under a minute, which vardiff retargets and new tips explain.
const SLOW_MIN_SECS = 60;
const HASHES_PER_DIFFICULTY = 4294967296;
// The order the proxy keeps reject counters in (figures::asic::REASONS), for when a list of
// counts comes instead of an object keyed by reason.
const REASONS = ["unknown-job", "stale", "duplicate", "above-target", "ntime", "version-bits",
  "extranonce2", "malformed", "not-subscribed", "unauthorized"];
// Past this many ASICs their list is read every BIG_FARM_EVERY_SECS instead of every round.
const BIG_FARM = 1000;
const BIG_FARM_EVERY_SECS = 10;
const EVENTS_SHOWN = 300;
const EXCLUDED_SHOWN = 200;
const MODES = {
  declared: "the farm's templates, declared to",
  pool_jobs: "the pool's own jobs from",
  solo: "solo, on the farm's node",
};

const state = {
  sort: { key: "worker", dir: 1 },
  startedAt: null,
  lastSeq: 0,
  events: [],
  clockSkew: 0, // proxy's clock minus ours, seconds
  refreshes: 0,
  chart: null,
  summary: null,
  blocks: [],
  skipEvents: false,
  asics: [],
  asicsAt: 0,
  history: null,
  historyMinute: null,
};

// ---- formatting -------------------------------------------------------------------------------

function $(id) { return document.getElementById(id); }

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function setText(id, text) { $(id).textContent = text; }

function num(v) { return typeof v === "number" && isFinite(v) ? v : 0; }

function fmtHashrate(h) {
  h = num(h);
  const units = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s", "EH/s"];
  let i = 0;
  while (Math.abs(h) >= 1000 && i < units.length - 1) { h /= 1000; i++; }
  return (h >= 100 || i === 0 ? h.toFixed(0) : h.toPrecision(3)) + " " + units[i];
}

function fmtInt(n) { return num(n).toLocaleString("en-US"); }

function fmtDifficulty(d) {
  d = num(d);
  if (d === 0) return "0";
  if (d >= 1e12 || d < 1e-3) return d.toExponential(2);
  if (d >= 100) return fmtInt(Math.round(d));
  return String(Number(d.toPrecision(4)));
}

function fmtDuration(secs) {
  secs = Math.max(0, Math.floor(num(secs)));
  const d = Math.floor(secs / 86400), h = Math.floor(secs % 86400 / 3600);
  const m = Math.floor(secs % 3600 / 60), s = secs % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

function serverNow() { return Date.now() / 1000 + state.clockSkew; }

function fmtAgo(unix) {
  if (!unix) return "never";
  return fmtDuration(serverNow() - unix) + " ago";
}

/** Like fmtAgo, without the "ago": for table cells whose header says it. */
function fmtAge(unix) { return unix ? fmtDuration(serverNow() - unix) : "never"; }

function fmtTime(unix) {
  const d = new Date((unix - state.clockSkew) * 1000);
  const today = new Date().toDateString() === d.toDateString();
  const t = d.toLocaleTimeString("en-GB", { hour12: false });
  return today ? t : d.toLocaleDateString("en-CA") + " " + t;
}

function fmtSats(s) {
  s = num(s);
  return (s / 1e8).toFixed(8) + " BTC (" + fmtInt(s) + " sat)";
}

function fmtMask(m) {
  return typeof m === "number" ? m.toString(16).padStart(8, "0") : "–";
}

function shortHash(h) { return h && h.length > 20 ? h.slice(0, 8) + "…" + h.slice(-8) : h || ""; }

/** Non-zero counts as [name, n], from an object by name or a list in REASONS order. */
function counts(v) {
  if (Array.isArray(v)) return v.map((n, i) => [REASONS[i] || "reason " + i, num(n)]).filter(e => e[1] > 0);
  return Object.entries(v || {}).map(([k, n]) => [k, num(n)]).filter(e => e[1] > 0);
}

function countsText(v, none) {
  const c = counts(v);
  return c.length ? c.map(([k, n]) => `${k} ${fmtInt(n)}`).join(", ") : none;
}

function total(v) { return counts(v).reduce((a, e) => a + e[1], 0); }

function modeText(mode, pool) {
  const what = MODES[mode] || mode || "unknown";
  return mode === "solo" || !pool ? what : `${what} ${pool}`;
}

// ---- health of one ASIC -----------------------------------------------------------------------

/**
 * Whether an ASIC stopped sharing: "silent" (nothing for 10 min), "slow" (the gap since its last
 * share is far longer than its difficulty and its hour's hashrate predict), or "" with the reason.
 */
function asicHealth(a, now) {
  const last = num(a.totals && a.totals.last_share);
  const since = now - (last || num(a.connected_at));
  if (since >= SILENT_SECS) {
    return { state: "silent", why: last ? `no share for ${fmtDuration(since)}` : `no share in ${fmtDuration(since)} connected` };
  }
  const rate = num(a.rates && (a.rates.h1h || a.rates.h5m));
  if (rate > 0 && num(a.difficulty) > 0) {
    const expected = num(a.difficulty) * HASHES_PER_DIFFICULTY / rate;
    if (since >= SLOW_MIN_SECS && since >= SLOW_INTERVALS * expected) {
      return { state: "slow", why: `${fmtDuration(since)} since a share, expected every ${fmtDuration(Math.max(1, expected))}` };
    }
  }
  return { state: "", why: "" };
}

// ---- fetching ---------------------------------------------------------------------------------

async function getJson(path, signal) {
  const r = await fetch(path, { signal, cache: "no-store", headers: { Accept: "application/json" } });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

/**
 * Whether a part is read in this round. The history gains a point a minute; the ASIC list of a
 * big farm is megabytes, so it is read every 10 s rather than every 2.
 */
function due(name) {
  const now = serverNow();
  if (name === "history") return state.historyMinute !== Math.floor(now / 60);
  if (name === "asics") return state.asics.length <= BIG_FARM || now - state.asicsAt >= BIG_FARM_EVERY_SECS;
  return true;
}

async function fetchAll() {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
  const paths = {
    summary: "api/v1/summary", asics: "api/v1/asics", history: "api/v1/history",
    template: "api/v1/template", upstream: "api/v1/upstream", blocks: "api/v1/blocks",
    events: "api/v1/events?since=" + state.lastSeq,
  };
  const names = Object.keys(paths);
  const skipped = { status: "skipped" };
  try {
    const got = await Promise.allSettled(names.map(n => due(n) ? getJson(paths[n], ctl.signal) : Promise.resolve(skipped)));
    const out = {};
    names.forEach((n, i) => { out[n] = got[i].value === skipped ? skipped : got[i]; });
    return out;
  } finally {
    clearTimeout(timer);
  }
}

/** Draws each part that answered; a section with a part that did not is greyed out. */
function apply(parts) {
  const errors = [], failed = new Set();
  const draw = (name, section, fn) => {
    const p = parts[name];
    if (p.status === "skipped") return;
    if (p.status === "fulfilled") {
      try { fn(p.value); } catch (e) { errors.push(`${name}: ${e.message}`); console.error(e); }
    } else {
      failed.add(section);
      errors.push(p.reason && p.reason.name === "AbortError" ? `${name}: timed out` : `${name}: ${p.reason && p.reason.message}`);
    }
  };
  draw("summary", "farm", renderSummary);
  draw("events", "upstream", renderEvents);
  draw("asics", "miners", renderAsics);
  draw("template", "template", renderTemplate);
  draw("upstream", "upstream", renderUpstream);
  draw("blocks", "found", renderBlocks);
  draw("history", "farm", h => { state.history = h; state.historyMinute = Math.floor(serverNow() / 60); });
  if (state.history) renderChart(state.history); // the live point moves every round
  for (const id of ["farm", "miners", "template", "upstream", "found"]) $(id).classList.toggle("stale", failed.has(id));
  return errors;
}

async function refresh() {
  if (document.hidden) return; // nothing to look at: spare the proxy
  let errors;
  try {
    errors = apply(await fetchAll());
  } catch (e) {
    errors = [e.message];
  }
  const status = $("status");
  const ok = errors.length === 0;
  status.dataset.ok = String(ok);
  status.textContent = ok ? `updated ${fmtTime(serverNow())}` : `cannot read ${errors.join("; ")} — retrying`;
  state.refreshes += 1;
  document.body.dataset.refreshes = String(state.refreshes);
}

async function loop() {
  await refresh();
  setTimeout(loop, REFRESH_MS); // after the round, so slow answers never pile up
}

// ---- summary and header -----------------------------------------------------------------------

function renderSummary(s) {
  if (typeof s.started_at === "number" && typeof s.uptime_secs === "number") {
    state.clockSkew = s.started_at + s.uptime_secs - Date.now() / 1000;
  }
  if (state.startedAt !== null && s.started_at !== state.startedAt) {
    // Another process behind the same address: its events are numbered from 1 again, and the
    // ones fetched in this round (after the old number) are an incomplete set.
    state.events = [];
    state.lastSeq = 0;
    state.skipEvents = true;
  }
  state.startedAt = s.started_at;
  state.summary = s;
  const h = s.hashrate || {};
  const farm = $("farm-hashrate");
  farm.textContent = fmtHashrate(h.h5m);
  farm.dataset.hashrate = String(num(h.h5m));
  setText("farm-hashrate-1h", fmtHashrate(h.h1h));
  setText("farm-hashrate-24h", fmtHashrate(h.h24h));
  setText("farm-miners", fmtInt(s.miners));
  setText("farm-connections", fmtInt(s.connections));
  const t = s.totals || {};
  setText("farm-accepted", fmtInt(t.accepted));
  const rejected = total(t.rejected), all = rejected + num(t.accepted);
  setText("farm-rejected", fmtInt(rejected) + (all ? ` (${(100 * rejected / all).toFixed(2)} %)` : ""));
  $("farm-rejected").title = countsText(t.rejected, "none");
  const blocks = $("farm-blocks");
  blocks.textContent = fmtInt(s.blocks_found);
  blocks.dataset.count = String(num(s.blocks_found));
  setText("farm-uptime", fmtDuration(s.uptime_secs));
  const up = s.upstream || {};
  const mode = $("mode");
  mode.dataset.mode = up.mode || "";
  mode.textContent = modeText(up.mode, up.pool);
  const node = $("node"), serving = s.node && s.node.serving;
  node.dataset.node = serving || "none";
  node.textContent = serving ? `node ${serving}` : `no node since ${s.node && s.node.down_since ? fmtAgo(s.node.down_since) : "start"}`;
  document.title = `${fmtHashrate(h.h5m)} · jd-proxy`;
}

// ---- ASIC table -------------------------------------------------------------------------------

const SORT_VALUE = {
  worker: a => a.worker, peer: a => a.peer, agent: a => a.agent,
  difficulty: a => a.difficulty, h5m: a => a.rates && a.rates.h5m, h1h: a => a.rates && a.rates.h1h,
  h24h: a => a.rates && a.rates.h24h, accepted: a => a.totals && a.totals.accepted,
  rejected: a => total(a.totals && a.totals.rejected), last_share: a => a.totals && a.totals.last_share,
  connected_at: a => a.connected_at, version_mask: a => a.version_mask,
};

/** Orders by the chosen column; missing values last whatever the direction, then by id. */
function compareAsics(a, b) {
  const f = SORT_VALUE[state.sort.key] || SORT_VALUE.worker;
  const x = f(a), y = f(b);
  const missX = x === null || x === undefined, missY = y === null || y === undefined;
  if (missX !== missY) return missX ? 1 : -1;
  let c = 0;
  if (!missX) c = typeof x === "string" ? x.localeCompare(String(y), "en", { numeric: true }) : x - y;
  return c * state.sort.dir || num(a.id) - num(b.id);
}

function asicRow(a, now) {
  const health = asicHealth(a, now);
  const r = a.rates || {}, t = a.totals || {};
  const name = el("td", {}, a.worker || "(none)");
  if (health.why) name.append(el("span", { class: "why" }, health.why));
  const cells = [
    name,
    el("td", { class: "mono" }, a.peer || ""),
    el("td", { class: "agent", title: a.agent || "" }, a.agent || "–"),
    el("td", { class: "num" }, fmtDifficulty(a.difficulty)),
    el("td", { class: "num", "data-col": "h5m" }, fmtHashrate(r.h5m)),
    el("td", { class: "num" }, fmtHashrate(r.h1h)),
    el("td", { class: "num" }, fmtHashrate(r.h24h)),
    el("td", { class: "num" }, fmtInt(t.accepted)),
    el("td", {}, countsText(t.rejected, "0")),
    el("td", { title: t.last_share ? fmtTime(t.last_share) : "" }, fmtAge(t.last_share)),
    el("td", { title: fmtTime(a.connected_at) }, fmtAge(a.connected_at)),
    el("td", { class: "mono" }, fmtMask(a.version_mask)),
  ];
  // On a phone each row becomes a card, its cells labelled from the header (style.css).
  const labels = document.querySelectorAll("#asics thead th");
  cells.forEach((c, i) => { if (labels[i]) c.dataset.label = labels[i].dataset.label || labels[i].textContent; });
  return el("tr", {
    "data-worker": a.worker, "data-asic-id": a.id, "data-hashrate": num(r.h5m),
    "data-state": health.state || null,
  }, ...cells);
}

function renderAsics(list) {
  state.asics = Array.isArray(list) ? list : [];
  state.asicsAt = serverNow();
  drawAsics();
}

function drawAsics() {
  const now = serverNow();
  const rows = state.asics.slice().sort(compareAsics).map(a => asicRow(a, now));
  document.querySelector("#asics tbody").replaceChildren(...rows);
  const stopped = rows.filter(r => r.dataset.state).length;
  setText("asics-count", `${state.asics.length}` + (stopped ? `, ${stopped} not sharing as expected` : ""));
  $("asics-empty").hidden = state.asics.length > 0;
}

function onSort(ev) {
  const th = ev.target.closest("th[data-sort]");
  if (!th) return;
  const key = th.dataset.sort;
  // Numbers read best largest first; names in alphabetical order.
  const firstDir = ["worker", "peer", "agent"].includes(key) ? 1 : -1;
  state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : firstDir };
  for (const h of document.querySelectorAll("#asics th[data-sort]")) {
    if (h === th) h.setAttribute("aria-sort", state.sort.dir > 0 ? "ascending" : "descending");
    else h.removeAttribute("aria-sort");
  }
  drawAsics();
}

// ---- template ---------------------------------------------------------------------------------

function renderTemplate(t) {
  setText("tpl-height", fmtInt(t.height));
  setText("tpl-fees", fmtSats(t.fees_sat));
  setText("tpl-txs", fmtInt(t.txs));
  setText("tpl-weight", `${fmtInt(t.weight)} WU (${(100 * num(t.weight) / 4e6).toFixed(1)} % of a block)`);
  setText("tpl-age", fmtDuration(t.age_secs));
  const s = state.summary && state.summary.template;
  setText("tpl-kind", [t.kind || (s && s.kind), s && s.node ? `from ${s.node}` : null].filter(Boolean).join(", ") || "–");
  const by = counts(t.excluded_by_reason);
  document.querySelector("#excluded-by-reason tbody").replaceChildren(
    ...by.map(([reason, n]) => el("tr", { "data-reason": reason }, el("td", {}, reason), el("td", { class: "num" }, fmtInt(n)))));
  // The proxy lists the first few exclusions of a template and counts them all.
  const list = Array.isArray(t.excluded) ? t.excluded : [];
  const all = Math.max(total(t.excluded_by_reason), list.length);
  $("excluded-none").hidden = all > 0;
  $("excluded-list-box").hidden = list.length === 0;
  setText("excluded-count", `(${fmtInt(all)})`);
  const items = list.slice(0, EXCLUDED_SHOWN).map(x => el("li", { "data-txid": x.txid, "data-reason": x.reason },
    `${x.txid} — ${x.reason}` + (x.detail ? `: ${x.detail}` : "")));
  const more = all - items.length;
  if (more > 0) items.push(el("li", {}, `… and ${fmtInt(more)} more`));
  $("excluded-list").replaceChildren(...items);
}

// ---- upstream and events ----------------------------------------------------------------------

function renderUpstream(u) {
  const mode = $("up-mode");
  mode.textContent = modeText(u.mode, u.pool);
  mode.dataset.mode = u.mode || "";
  setText("up-since", u.since ? `${fmtTime(u.since)} (${fmtAgo(u.since)})` : "start");
  const d = u.declarations || {};
  setText("up-declarations", `sent ${fmtInt(d.sent)}, accepted ${fmtInt(d.accepted)}, refused ${countsText(d.refused, "0")}`);
  const p = u.pool_shares || {};
  setText("up-shares", `submitted ${fmtInt(p.submitted)}, accepted ${fmtInt(p.accepted)}, rejected ${fmtInt(p.rejected)}, dropped ${fmtInt(p.dropped)}`);
  const w = u.work || {};
  const pct = num(w.validated) ? ` (${(100 * num(w.acknowledged) / num(w.validated)).toFixed(1)} %)` : "";
  setText("up-work", `${fmtDifficulty(w.acknowledged)} of ${fmtDifficulty(w.validated)} validated${pct}`);
  setText("up-failovers", countsText(u.failovers, "none"));
  renderRoutes(u.routes);
}

/** With more than one route ([[route]]): each one's pool, ASICs and work, a line each. */
function renderRoutes(routes) {
  const list = Array.isArray(routes) ? routes : [];
  const show = list.length > 1;
  $("up-routes-t").hidden = !show;
  $("up-routes").hidden = !show;
  if (!show) return;
  $("up-routes").replaceChildren(...list.map(r => {
    const w = r.work || {};
    const failed = total(r.failovers);
    return el("div", {}, `${r.name}: ${modeText(r.mode, r.pool)}, ${fmtInt(r.miners)} ASICs, ` +
      `${fmtHashrate(r.hashrate)}, work acknowledged ${fmtDifficulty(w.accepted)}` +
      (failed ? `, ${fmtInt(failed)} failovers` : ""));
  }));
}

function eventText(e) {
  switch (e.kind) {
    case "upstream": return (e.route ? `route ${e.route} ` : "") + `mining: ${modeText(e.mode, e.pool)}` + (e.reason ? ` — ${e.reason}` : "");
    case "block_found": return `block ${e.height} found by ${e.worker} (${shortHash(e.hash)})`;
    case "block_fate": return `block ${shortHash(e.hash)}: ${e.by} says ${e.fate}`;
    case "node": return e.node === "none" ? "no node answers: templates stall" : `templates from node ${e.node}`;
    case "reload": return `settings reloaded: ${e.what}`;
    default: return e.kind || "event";
  }
}

function renderEvents(list) {
  if (state.skipEvents) { state.skipEvents = false; list = []; }
  if (!Array.isArray(list)) return;
  for (const e of list) {
    if (num(e.seq) > state.lastSeq) { state.events.push(e); state.lastSeq = num(e.seq); }
  }
  state.events = state.events.slice(-EVENTS_SHOWN);
  if (list.length === 0 && $("events").childElementCount === state.events.length) return;
  $("events").replaceChildren(...state.events.slice().reverse().map(e => el("li",
    { "data-kind": e.kind, "data-seq": e.seq },
    el("time", { datetime: new Date(num(e.at) * 1000).toISOString() }, fmtTime(e.at)), eventText(e))));
  $("events-none").hidden = state.events.length > 0;
}

// ---- blocks -----------------------------------------------------------------------------------

function verdict(fate) {
  const f = String(fate).toLowerCase();
  if (/^(accepted|duplicate)/.test(f)) return "accepted";
  if (/^(rejected|abandoned|invalid|refused)/.test(f)) return "rejected";
  if (/^(pending|submitting|waiting|retry)/.test(f)) return "pending";
  return "other";
}

function renderBlocks(list) {
  state.blocks = Array.isArray(list) ? list : [];
  const items = state.blocks.slice().sort((a, b) => num(b.at) - num(a.at) || num(b.height) - num(a.height)).map(b => {
    const fates = Object.entries(b.fates || {});
    const box = el("div", { class: "fates" }, ...fates.map(([by, fate]) =>
      el("span", { class: "fate", "data-by": by, "data-verdict": verdict(fate) }, `${by}: ${fate}`)));
    if (!fates.length) box.append(el("span", { class: "fate", "data-verdict": "pending" }, "no verdict yet"));
    return el("li", { "data-hash": b.hash, "data-height": b.height, "data-worker": b.worker },
      el("time", { datetime: new Date(num(b.at) * 1000).toISOString() }, fmtTime(b.at)),
      el("strong", {}, `#${b.height}`), ` by ${b.worker} `, el("span", { class: "hash", title: b.hash }, b.hash), box);
  });
  $("blocks").replaceChildren(...items);
  setText("blocks-count", items.length ? `(${items.length})` : "");
  $("blocks-none").hidden = items.length > 0;
}

// ---- the hashrate chart -----------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

/** A round axis top at or above `v`: 1, 2 or 5 times a power of ten. */
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  return [1, 2, 5, 10].map(m => m * p).find(x => x >= v);
}

/** Where mining went over [x0, x1]: [{from, to, mode}], from the upstream events and the state now. */
function modeBands(x0, x1) {
  const changes = state.events.filter(e => e.kind === "upstream").map(e => ({ at: num(e.at), mode: e.mode }));
  const up = state.summary && state.summary.upstream;
  if (up && up.mode) changes.push({ at: num(up.since) || x0, mode: up.mode });
  changes.sort((a, b) => a.at - b.at);
  const bands = [];
  let at = x0, mode = "unknown";
  for (const c of changes) {
    if (c.at > at) bands.push({ from: at, to: Math.min(c.at, x1), mode });
    at = Math.max(at, c.at);
    mode = c.mode;
  }
  if (at < x1) bands.push({ from: at, to: x1, mode });
  // Before the first change seen, where mining went is not known: no band.
  return bands.filter(b => b.to > b.from && b.mode !== "unknown");
}

function chartPoints(history) {
  const now = serverNow();
  // The minute under way, and the one the proxy started in, hold only part of a minute's work
  // (yet count as a whole one): left out, the live 5 min figure ends the line.
  const started = state.summary ? num(state.summary.started_at) : 0;
  const pts = (Array.isArray(history) ? history : []).filter(p => num(p.at) + 60 <= now && num(p.at) >= started)
    .map(p => ({ at: num(p.at) + 30, h: num(p.hashrate) }));
  const live = state.summary && state.summary.hashrate;
  if (live) pts.push({ at: now, h: num(live.h5m), live: true });
  return pts;
}

function renderChart(history) {
  const box = $("hashrate-chart");
  const W = Math.max(200, box.clientWidth), H = Math.max(120, box.clientHeight);
  box.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const L = 70, R = 12, T = 14, B = 34, BAND = 8;
  const pts = chartPoints(history);
  const now = serverNow(), x1 = now;
  const started = state.summary ? num(state.summary.started_at) : 0;
  const first = pts.length ? pts[0].at : now;
  // At least the last 10 minutes, but not from before the proxy started (then at least one).
  let x0 = Math.min(first, now - 600);
  if (started) x0 = Math.max(x0, Math.min(started, first));
  x0 = Math.min(x0, now - 60);
  const top = niceCeil(Math.max(...pts.map(p => p.h), 0) * 1.1);
  const X = t => L + (t - x0) / (x1 - x0) * (W - L - R);
  const Y = h => T + (1 - h / top) * (H - T - B - BAND - 4);
  const nodes = [];
  for (let i = 0; i <= 4; i++) {
    const v = top * i / 4, y = Y(v);
    nodes.push(svg("line", { class: "grid", x1: L, x2: W - R, y1: y, y2: y }));
    const label = svg("text", { x: L - 6, y: y + 4, "text-anchor": "end", class: "axis" });
    label.textContent = fmtHashrate(v);
    nodes.push(label);
  }
  const step = [60, 300, 600, 1800, 3600, 7200, 14400, 21600].find(s => (x1 - x0) / s <= 6) || 43200;
  for (let t = Math.ceil(x0 / step) * step; t <= x1; t += step) {
    const label = svg("text", { x: X(t), y: H - 4, "text-anchor": "middle", class: "axis" });
    label.textContent = fmtTime(t).slice(-8, -3);
    nodes.push(svg("line", { class: "grid", x1: X(t), x2: X(t), y1: T, y2: H - B }), label);
  }
  for (const b of modeBands(Math.max(x0, started), x1)) {
    const rect = svg("rect", { class: `band-${MODES[b.mode] ? b.mode : "unknown"}`, x: X(b.from), width: Math.max(1, X(b.to) - X(b.from)), y: H - B - BAND + 2, height: BAND });
    const title = svg("title", {});
    title.textContent = `${fmtTime(b.from)}–${fmtTime(b.to)}: ${modeText(b.mode, null)}`;
    rect.append(title);
    nodes.push(rect);
  }
  for (const b of state.blocks || []) {
    // A tick along the top: on regtest blocks come every second and full-height lines would
    // cover the chart.
    if (num(b.at) >= x0) nodes.push(svg("line", { class: "block-mark", x1: X(b.at), x2: X(b.at), y1: T - 6, y2: T + 6 }));
  }
  if (pts.length) {
    const line = pts.map(p => `${X(p.at).toFixed(1)},${Y(p.h).toFixed(1)}`).join(" ");
    nodes.push(svg("polygon", { class: "area", points: `${X(pts[0].at)},${Y(0)} ${line} ${X(pts[pts.length - 1].at)},${Y(0)}` }));
    nodes.push(svg("polyline", { class: "line", points: line }));
    const last = pts[pts.length - 1];
    nodes.push(svg("circle", { class: "live", cx: X(last.at), cy: Y(last.h), r: 3.5 }));
  }
  const cursor = svg("line", { class: "cursor", y1: T, y2: H - B, visibility: "hidden" });
  const tip = svg("text", { class: "tip", y: T + 12, visibility: "hidden" });
  nodes.push(cursor, tip);
  box.replaceChildren(...nodes);
  state.chart = { pts, X, Y, L, R, W, cursor, tip };
}

function onChartMove(ev) {
  const c = state.chart;
  if (!c || !c.pts.length) return;
  const rect = $("hashrate-chart").getBoundingClientRect();
  const x = (ev.clientX - rect.left) * c.W / rect.width;
  const p = c.pts.reduce((best, q) => Math.abs(c.X(q.at) - x) < Math.abs(c.X(best.at) - x) ? q : best);
  const px = c.X(p.at);
  c.cursor.setAttribute("x1", px); c.cursor.setAttribute("x2", px);
  c.cursor.setAttribute("visibility", "visible");
  c.tip.textContent = `${fmtTime(p.at).slice(-8, -3)} ${fmtHashrate(p.h)}${p.live ? " (live, 5 min)" : ""}`;
  const right = px > c.W / 2;
  c.tip.setAttribute("x", right ? px - 6 : px + 6);
  c.tip.setAttribute("text-anchor", right ? "end" : "start");
  c.tip.setAttribute("visibility", "visible");
}

function onChartLeave() {
  const c = state.chart;
  if (!c) return;
  c.cursor.setAttribute("visibility", "hidden");
  c.tip.setAttribute("visibility", "hidden");
}

// ---- start ------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  document.querySelector("#asics thead").addEventListener("click", onSort);
  const chart = $("hashrate-chart");
  chart.addEventListener("mousemove", onChartMove);
  chart.addEventListener("mouseleave", onChartLeave);
  window.addEventListener("resize", () => { if (state.history) renderChart(state.history); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  loop();
});
