/* Shared helpers of the dashboard pages: fetch JSON, draw charts, build tables.
   Every chart records how many data points it drew in window.nextbuyCharts (and in its
   canvas' data-points attribute), which the browser tests read. */
"use strict";
window.nextbuyCharts = {};
const nb = {};
nb.PALETTE = ["#2f6fed", "#e8793a", "#1f8a4c", "#c23b3b", "#8452c9", "#0f9aa8", "#b58b00", "#6b7280"];
nb.charts = {};
nb.REFRESH_MS = 15000;

nb.getJSON = async function (url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (response.status === 401) {
    location.href = "/dashboard/login?next=" + encodeURIComponent(location.pathname);
    throw new Error("not logged in");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = body && (body.detail || body.title);
    throw new Error(typeof detail === "string" ? detail : response.status + " " + response.statusText);
  }
  return body;
};

nb.showError = function (error) {
  const box = document.getElementById("error");
  if (!box) return;
  box.hidden = !error;
  box.textContent = error ? String(error.message || error) : "";
};

nb.countPoints = function (data) {
  let n = 0;
  for (const set of data.datasets || []) for (const v of set.data || []) if (v !== null && v !== undefined) n += 1;
  return n;
};

/* chart(id, type, {labels, datasets:[{label,data}], note}, options): create or update. */
nb.chart = function (id, type, data, options) {
  const canvas = document.getElementById(id);
  if (!canvas) return;
  const datasets = (data.datasets || []).map((set, i) => {
    const kind = set.type || type;
    const color = nb.PALETTE[i % nb.PALETTE.length];
    const mixed = kind === "line" && type !== "line";  // estimates drawn over interval bars
    return Object.assign({
      borderColor: color,
      backgroundColor: kind === "line" ? color + (mixed ? "" : "33") : (mixed ? color : color + (type === "bar" && set.type ? "66" : "")),
      borderWidth: kind === "line" ? 2 : 0, pointRadius: mixed ? 6 : (kind === "line" ? 2 : 0),
      showLine: !mixed, spanGaps: true, tension: 0.2, order: mixed ? 0 : 1,
    }, set);
  });
  if (type === "doughnut" || type === "pie") {
    for (const set of datasets) set.backgroundColor = (data.labels || []).map((_, j) => nb.PALETTE[j % nb.PALETTE.length]);
  }
  const points = nb.countPoints(data);
  canvas.dataset.points = String(points);
  window.nextbuyCharts[id] = points;
  const note = document.getElementById(id.replace("chart-", "note-"));
  if (note) note.textContent = data.note || "";
  const config = {
    type,
    data: { labels: data.labels || [], datasets },
    options: Object.assign({
      responsive: true, maintainAspectRatio: false, animation: false,
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
    }, options || {}),
  };
  if (nb.charts[id]) {
    nb.charts[id].data = config.data;
    nb.charts[id].options = config.options;
    nb.charts[id].update();
  } else {
    nb.charts[id] = new Chart(canvas, config);
  }
};

nb.el = function (tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
};

nb.fill = function (id, ...children) {
  const node = typeof id === "string" ? document.getElementById(id) : id;
  if (node) node.replaceChildren(...children.flat());
  return node;
};

/* table(columns, rows): columns [{key, label, num, format}]; rows are objects. */
nb.table = function (columns, rows, rowClass) {
  if (!rows || !rows.length) return nb.el("p", { class: "empty" }, "nothing yet");
  const head = nb.el("tr", {}, columns.map((c) => nb.el("th", { class: c.num ? "num" : "" }, c.label)));
  const body = rows.map((row) => nb.el("tr", { class: rowClass ? rowClass(row) : "" }, columns.map((c) => {
    const value = c.format ? c.format(row[c.key], row) : row[c.key];
    return nb.el("td", { class: c.num ? "num" : "" }, value === null || value === undefined ? "–" : value);
  })));
  return nb.el("div", { class: "table-wrap" }, nb.el("table", {}, nb.el("thead", {}, head), nb.el("tbody", {}, body)));
};

nb.kpis = function (items) {
  nb.fill("kpis", items.map((k) => nb.el("div", { class: "kpi" },
    nb.el("div", { class: "label" }, k.label),
    nb.el("div", { class: "value" }, k.value === null || k.value === undefined ? "–" : k.value),
    k.sub ? nb.el("div", { class: "sub" }, k.sub) : null)));
};

nb.facts = function (pairs) {
  return nb.el("dl", { class: "facts" }, pairs.flatMap(([k, v]) => [nb.el("dt", {}, k), nb.el("dd", {}, v === null || v === undefined ? "–" : v)]));
};

nb.int = (v) => (v === null || v === undefined ? null : Number(v).toLocaleString("en"));
nb.fixed = (d) => (v) => (v === null || v === undefined ? null : Number(v).toFixed(d));
nb.pct = (v, d = 1) => (v === null || v === undefined ? null : (100 * v).toFixed(d) + " %");
nb.ms = (v) => (v === null || v === undefined ? null : Number(v).toFixed(v < 10 ? 2 : 1) + " ms");
nb.money = (v) => (v === null || v === undefined ? null : Number(v).toLocaleString("en", { maximumFractionDigits: 2, minimumFractionDigits: 2 }));
nb.when = (iso) => (iso ? iso.replace("T", " ").replace("+00:00", " UTC") : null);
nb.age = function (seconds) {
  if (seconds === null || seconds === undefined) return null;
  const units = [[86400 * 365, "y"], [86400, "d"], [3600, "h"], [60, "min"]];
  for (const [size, name] of units) if (seconds >= size) return (seconds / size).toFixed(1) + " " + name;
  return Math.round(seconds) + " s";
};

/* page(render): render now and every REFRESH_MS; body[data-ready] marks the first render. */
nb.page = function (render) {
  const run = async () => {
    try {
      await render();
      nb.showError(null);
      const stamp = document.getElementById("updated");
      if (stamp) stamp.textContent = "updated " + new Date().toLocaleTimeString();
    } catch (error) {
      nb.showError(error);
    } finally {
      document.body.dataset.ready = "1";
    }
  };
  run();
  setInterval(() => { if (!document.hidden) run(); }, nb.REFRESH_MS);
};

/* A background figure that failed: shown in the page's error box (after the rest is drawn). */
nb.checkFigures = function (figures, names) {
  const failed = names.filter((n) => figures && figures[n] && figures[n].error);
  if (failed.length) throw new Error(failed.map((n) => n + ": " + figures[n].error).join("; "));
};
