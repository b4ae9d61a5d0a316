/* Experiments: variants, live results with confidence intervals, traffic over time. */
"use strict";
nb.page(async () => {
  const d = await nb.getJSON("/v1/dashboard/experiments");
  nb.checkFigures(d.figures, ["experiments"]);
  const root = document.getElementById("experiments");
  if (!d.experiments.length) {
    nb.fill(root, nb.el("section", { class: "card" }, nb.el("p", { class: "empty" },
      "No experiment yet: create one with nextbuy experiment create or POST /v1/admin/experiments.")));
    return;
  }
  // rebuilt whole on each refresh: charts are keyed by experiment, so they are updated in place
  const seen = new Set();
  for (const [n, e] of d.experiments.entries()) {
    const id = "exp-" + n;
    seen.add(id);
    let card = document.getElementById(id);
    if (!card) {
      card = nb.el("section", { class: "experiment", id });
      root.append(card);
    }
    const canvas = (name) => nb.el("div", { class: "chart" }, nb.el("canvas", { id: "chart-" + id + "-" + name }));
    const note = (name) => nb.el("p", { class: "note", id: "note-" + id + "-" + name });
    if (!card.dataset.built) {
      card.dataset.built = "1";
      card.append(
        nb.el("h2", { class: "experiment-title" }),
        nb.el("div", { class: "grid" },
          nb.el("div", { class: "card wide" }, nb.el("h3", {}, "Variants"), nb.el("div", { class: "variants" })),
          ...["ctr", "conversion", "revenue_per_visitor"].map((m) => nb.el("div", { class: "card" },
            nb.el("h3", {}, m.replace(/_/g, " ") + " with 95% interval"), canvas(m), note(m))),
          nb.el("div", { class: "card" }, nb.el("h3", {}, "Traffic split over time"), canvas("traffic"), note("traffic")),
          // a fixed split has no allocation history: its traffic chart is the allocation
          e.allocation === "thompson" ? nb.el("div", { class: "card" }, nb.el("h3", {}, "Bandit allocation over time"), canvas("allocation"), note("allocation")) : null,
          nb.el("div", { class: "card" }, nb.el("h3", {}, "CTR lift over time"), canvas("lift"), note("lift")),
          nb.el("div", { class: "card wide" }, nb.el("h3", {}, "Notes"), nb.el("div", { class: "notes" }))));
    }
    nb.fill(card.querySelector(".experiment-title"), e.name + " ",
      nb.el("span", { class: "badge " + (e.status === "running" ? "good" : "") }, e.status),
      " ", nb.el("span", { class: "badge" }, e.allocation + " allocation"),
      " ", nb.el("span", { class: "note" }, "layer " + e.layer + " · " + nb.int(e.units) + " units"));
    const byName = Object.fromEntries(e.variants.map((v) => [v.variant, v]));
    const rows = e.configured_variants.map((c) => Object.assign({ name: c.name, config: c }, byName[c.name] || {}));
    const ci = (m) => ({ key: m, label: m.replace(/_/g, " "), num: true, format: (v, row) => {
      if (v === undefined || v === null) return null;
      const f = m === "revenue_per_visitor" ? nb.fixed(2) : (x) => nb.pct(x, 2);
      const lo = row[m + "_ci_low"], hi = row[m + "_ci_high"];
      return f(v) + (lo !== undefined && lo !== null ? " [" + f(lo) + ", " + f(hi) + "]" : "");
    } });
    const lift = (m) => ({ key: m + "_lift", label: m.replace(/_/g, " ") + " lift", num: true, format: (v, row) => {
      if (v === undefined || v === null) return row.name === e.control ? "control" : null;
      const p = row[m + "_p_value_always_valid"];
      return nb.pct(v, 1) + (p !== undefined && p !== null ? " (p " + Number(p).toPrecision(2) + ")" : "");
    } });
    nb.fill(card.querySelector(".variants"), nb.table([
      { key: "name", label: "variant", format: (v, row) => v + (row.config.holdout ? " (holdout)" : "") + (row.config.shadow ? " (shadow)" : "") },
      { key: "config", label: "weight", num: true, format: (c) => (c.weight === null ? null : String(c.weight)) },
      { key: "config", label: "model", format: (c) => c.model_version || "serving" },
      { key: "units", label: "units", num: true, format: nb.int },
      { key: "impressions", label: "lists", num: true, format: nb.int },
      ci("ctr"), ci("conversion"), ci("revenue_per_visitor"), lift("ctr"), lift("conversion"),
    ], rows));
    for (const m of ["ctr", "conversion", "revenue_per_visitor"]) {
      nb.chart("chart-" + id + "-" + m, "bar", e.intervals[m], { scales: { y: { beginAtZero: true } }, plugins: { legend: { display: false } } });
    }
    nb.chart("chart-" + id + "-traffic", "bar", e.traffic_chart, { scales: { x: { stacked: true }, y: { stacked: true, max: 100, beginAtZero: true } } });
    if (e.allocation === "thompson") nb.chart("chart-" + id + "-allocation", "line", e.allocation_chart, { scales: { y: { beginAtZero: true, max: 100 } } });
    nb.chart("chart-" + id + "-lift", "line", e.lift_chart, {});
    const srm = e.srm ? ["sample ratio check p = " + Number(e.srm.p_value).toPrecision(2) + (e.srm.mismatch ? " (MISMATCH)" : " (ok)")] : [];
    const power = e.power && e.power.units_per_arm_needed ? ["units per arm: " + nb.int(e.power.units_per_arm_now) + " of " + nb.int(e.power.units_per_arm_needed) + " needed for a " + nb.pct(e.power.mde_relative, 0) + " lift in conversion"] : [];
    nb.fill(card.querySelector(".notes"), nb.el("ul", {}, [...srm, ...power, ...e.notes].map((t) => nb.el("li", {}, t))));
  }
  for (const card of [...root.children]) if (!seen.has(card.id)) card.remove();
});
