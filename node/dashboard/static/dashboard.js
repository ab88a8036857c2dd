// The Tally dashboard: draws what /api/stream pushes (a snapshot each second, each block
// as it commits), and calls the dashboard server for details and admin actions.
"use strict";

const BLOCKS_SHOWN = 50;
const FAULTS_POLL_MS = 2000;
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  node.append(...children.map((c) => (c instanceof Node ? c : String(c ?? ""))));
  return node;
}

const short = (hex, n = 12) => (hex ? hex.slice(0, n) : "");
const clock = (ms) => (ms == null ? "" : new Date(ms).toLocaleTimeString());

// -- nodes -------------------------------------------------------------------------------

function drawNodes(nodes) {
  const rows = nodes.map((n) => {
    const health = n.up
      ? el("span", { class: "good" }, "up")
      : el("span", { class: "bad", title: n.error }, "down: " + n.error);
    const view = n.view == null ? "" : n.view + (n.view_active === false ? " (changing)" : "");
    const peers = n.peers == null ? "" : `${n.peers}/${n.peers_total}`;
    return el("tr", { "data-node": n.id },
      el("td", { class: "id" }, n.id), el("td", { class: "role" }, n.role ?? ""),
      el("td", { class: "height num" }, n.height ?? ""), el("td", { class: "view num" }, view),
      el("td", {}, n.primary ?? ""), el("td", { class: "health" }, health),
      el("td", { class: "peers num" }, peers), el("td", { class: "num" }, n.mempool ?? ""),
      el("td", { class: "num" }, n.txs_committed ?? ""),
      el("td", { class: "mono" }, short(n.last_block_hash)));
  });
  $("#nodes tbody").replaceChildren(...rows);
  const top = Math.max(...nodes.map((n) => n.height ?? -1));
  $("#cluster-height").textContent = top >= 0 ? `height ${top}` : "no node answers";
}

// -- charts ------------------------------------------------------------------------------

function chart(id, label, stroke) {
  const box = $(id);
  const opts = {
    width: Math.max(300, box.clientWidth), height: 200, legend: { show: false },
    scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] } },
    series: [{}, { label, stroke, width: 2, fill: stroke + "22", spanGaps: false }],
    axes: [{}, { size: 50 }],
  };
  const plot = new uPlot(opts, [[], []], box);
  new ResizeObserver(() => plot.setSize({ width: Math.max(300, box.clientWidth), height: 200 }))
    .observe(box);
  return plot;
}

const charts = {};
function drawCharts(series) {
  charts.tps ??= chart("#chart-tps", "tx/s", "#0a58ca");
  charts.latency ??= chart("#chart-latency", "ms", "#bf5b04");
  charts.tps.setData([series.t, series.tx_per_s]);
  charts.latency.setData([series.t, series.latency_ms]);
}

// -- blocks and txs ----------------------------------------------------------------------

function addBlock(b) {
  const body = $("#blocks tbody");
  if (body.querySelector(`tr[data-height="${b.height}"]`)) return;
  const row = el("tr", { "data-height": b.height, onclick: () => showBlock(b.height) },
    el("td", { class: "num" }, b.height), el("td", { class: "mono" }, short(b.hash)),
    el("td", {}, b.proposer), el("td", { class: "num" }, b.txs), el("td", {}, clock(b.timestamp_ms)));
  const after = [...body.children].find((r) => Number(r.dataset.height) < b.height);
  body.insertBefore(row, after ?? null);
  while (body.children.length > BLOCKS_SHOWN) body.lastElementChild.remove();
}

async function getJson(url, options = {}) {
  const resp = await fetch(url, options);
  const body = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
  return { ok: resp.ok, status: resp.status, body };
}

async function showBlock(height) {
  document.querySelectorAll("#blocks tr.selected").forEach((r) => r.classList.remove("selected"));
  $(`#blocks tr[data-height="${height}"]`)?.classList.add("selected");
  const box = $("#block-detail");
  const { ok, body } = await getJson(`/api/block/${height}`);
  if (!ok) return box.replaceChildren(el("span", { class: "bad" }, body.error));
  const txs = body.txs.map((t) =>
    el("li", {}, el("a", { class: "tx mono", "data-tx": t.tx_id, onclick: () => showTx(t.tx_id) },
      t.tx_id), ` ${t.kind}, ${t.status}`));
  box.replaceChildren(
    el("div", {}, `block ${body.height} `, el("span", { class: "mono" }, short(body.hash, 16)),
      ` by ${body.proposer}, ${body.txs.length} tx(s)`),
    txs.length ? el("ul", { id: "block-txs" }, ...txs) : el("p", { class: "note" }, "no txs"));
}

async function showTx(id) {
  const { body } = await getJson(`/api/tx/${id}`);
  $("#tx-detail").textContent = JSON.stringify(body, null, 2);
}

// -- faults ------------------------------------------------------------------------------

let listed = null; // fault_list per node, while the token works; else the events' view
let drawnFaults = ""; // what the table shows: redrawn only when it changes (a click stays put)

function authHeaders() {
  const token = $("#token").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function drawFaults(fromEvents) {
  const perNode = listed ?? fromEvents;
  const key = JSON.stringify([listed !== null, perNode]);
  if (key === drawnFaults) return;
  drawnFaults = key;
  $("#faults-source").textContent = listed
    ? "as the nodes list them (fault_list, with your token)"
    : "as the nodes announced them (events stream); enter the token for the full list";
  const rows = [];
  for (const [nid, faults] of Object.entries(perNode)) {
    for (const f of faults) {
      const params = Object.entries(f.params ?? {}).map(([k, v]) => `${k}=${v}`).join(", ");
      const button = el("button", { type: "button", onclick: () => heal(nid, f.id) }, "heal");
      rows.push(el("tr", { "data-fault-node": nid, "data-fault-kind": f.kind },
        el("td", {}, nid), el("td", { class: "mono" }, f.id ?? ""), el("td", {}, f.kind),
        el("td", {}, params), el("td", {}, f.state ?? "active"), el("td", {}, button)));
    }
  }
  if (!rows.length) rows.push(el("tr", { class: "none" }, el("td", { colspan: 6 }, "no active faults")));
  $("#faults tbody").replaceChildren(...rows);
}

function answerText(body) {
  if (!body.results) return body.error ?? JSON.stringify(body);
  const one = (r) => r.error ? "refused: " + r.error
    : r.healed ? "ok healed " + (r.healed.join(", ") || "nothing") : "ok " + (r.id ?? "");
  return Object.entries(body.results).map(([nid, r]) => `${nid}: ${one(r)}`).join("\n");
}

async function admin(path, payload) {
  const box = $("#fault-message");
  box.className = "message";
  box.textContent = "…";
  const { ok, body } = await getJson(path, {
    method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() },
    body: JSON.stringify(payload),
  });
  box.className = "message " + (ok ? "good" : "bad");
  box.textContent = answerText(body);
  await pollFaults();
}

function parseParams(text) {
  const params = {};
  for (const item of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    const [k, v = ""] = item.split("=");
    params[k.trim()] = v === "true" ? true : v === "false" ? false
      : v.trim() !== "" && !isNaN(Number(v)) ? Number(v) : v.trim();
  }
  return params;
}

function inject() {
  const duration = $("#fault-duration").value;
  return admin("/api/fault/inject", {
    node: $("#fault-node").value, kind: $("#fault-kind").value,
    params: parseParams($("#fault-params").value),
    duration_seconds: duration === "" ? null : Number(duration),
  });
}

const heal = (node, id = null) => admin("/api/fault/heal", { node, id });

async function pollFaults() {
  if (!$("#token").value.trim()) { listed = null; return; }
  const { ok, body } = await getJson("/api/faults", { headers: authHeaders() });
  listed = ok ? Object.fromEntries(Object.entries(body.results).map(([n, r]) => [n, r.faults])) : null;
  if (last) drawFaults(last.faults);
}

// -- contracts ---------------------------------------------------------------------------

function drawContracts(contracts) {
  $("#contracts-note").textContent = contracts.error
    ?? (contracts.items.length ? "" : "no open contracts");
  const rows = contracts.items.map((c) =>
    el("tr", { "data-contract": c.id },
      el("td", { class: "mono", title: c.id }, short(c.id)), el("td", {}, c.engine),
      el("td", { class: "phase" }, c.phase),
      el("td", {}, c.deadline == null ? "none" : new Date(c.deadline).toLocaleString()),
      el("td", { class: "mono" }, (c.parties ?? []).map((p) => short(p, 8)).join(" ")),
      el("td", { class: "num" }, c.escrow), el("td", { class: "num" }, c.created_height)));
  $("#contracts tbody").replaceChildren(...rows);
}

// -- the stream --------------------------------------------------------------------------

let last = null;
function onSnapshot(snap) {
  last = snap;
  drawNodes(snap.nodes);
  drawCharts(snap.series);
  drawFaults(snap.faults);
  drawContracts(snap.contracts);
}

function connect() {
  const source = new EventSource("/api/stream");
  const status = $("#connection");
  source.onopen = () => { status.textContent = "live"; status.className = "good"; };
  source.onerror = () => { status.textContent = "reconnecting…"; status.className = "bad"; };
  source.addEventListener("snapshot", (e) => onSnapshot(JSON.parse(e.data)));
  source.addEventListener("block", (e) => addBlock(JSON.parse(e.data)));
}

async function start() {
  const { body } = await getJson("/api/config");
  for (const nid of body.nodes) $("#fault-node").append(el("option", { value: nid }, nid));
  for (const [kind, k] of Object.entries(body.faults)) {
    $("#fault-kind").append(el("option", { value: kind, title: k.shows }, kind));
  }
  const defaults = () => {
    const k = body.faults[$("#fault-kind").value];
    $("#fault-params").value = Object.entries(k.params).map(([n, v]) => `${n}=${v}`).join(",");
  };
  $("#fault-kind").addEventListener("change", defaults);
  $("#fault-kind").value = "delay";
  defaults();
  $("#inject").addEventListener("click", inject);
  $("#heal").addEventListener("click", () => heal($("#fault-node").value));
  $("#token").addEventListener("change", pollFaults);
  setInterval(pollFaults, FAULTS_POLL_MS);
  connect();
}

start();
