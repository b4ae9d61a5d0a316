/* Model quality: offline metrics per version, lists in service, cold start, drift. */
"use strict";
nb.page(async () => {
  const d = await nb.getJSON("/v1/dashboard/quality");
  const b = d.beyond || {};
  const serving = d.versions.find((v) => v.serving) || {};
  const m = serving.metrics || {};
  nb.kpis([
    { label: "Serving", value: d.serving_version || "none", sub: serving.model || "" },
    { label: "NDCG@10 (validation)", value: nb.fixed(4)(m["ndcg@10"]) },
    { label: "Catalogue coverage", value: nb.pct(b.catalog_coverage), sub: "of items in any top-" + (b.k || 10) },
    { label: "Diversity", value: nb.fixed(3)(b.diversity), sub: "by " + (b.grouping || "category") },
    { label: "Popularity bias", value: nb.fixed(3)(b.popularity_bias), sub: "0.5 is neutral" },
    { label: "Cold-start share", value: nb.pct(d.cold_start.share), sub: nb.int(d.cold_start.personal_requests) + " for-you requests" },
    { label: "Drift (TVD)", value: d.drift ? nb.fixed(3)(d.drift.total_variation) : null, sub: d.drift ? "by " + d.drift.grouping : "" },
  ]);
  nb.chart("chart-history", "line", d.history, { scales: { y: { beginAtZero: true } } });
  nb.chart("chart-drift", "bar", d.drift_chart, { scales: { y: { beginAtZero: true, title: { display: true, text: "%" } } } });
  nb.chart("chart-cold", "doughnut", d.cold_start_chart, { scales: {}, interaction: {} });
  nb.fill("beyond", nb.facts([
    ["customers measured", nb.int(b.users)],
    ["catalogue coverage", nb.pct(b.catalog_coverage)],
    ["intra-list diversity", nb.fixed(3)(b.diversity)],
    ["popularity bias", nb.fixed(3)(b.popularity_bias)],
    ["novelty (bits)", nb.fixed(2)(b.novelty)],
    ["recommended from", d.drift ? d.drift.recommended_from : null],
    ["purchases compared", d.drift ? nb.int(d.drift.purchases) + (d.drift.purchases_since ? " since " + nb.when(d.drift.purchases_since) : "") : null],
  ]));
  const metric = (k) => ({ key: k, label: k, num: true, format: (v, row) => nb.fixed(4)(row.metrics[k]) });
  nb.fill("versions", nb.table([
    { key: "version", label: "version", format: (v, row) => row.serving ? v + " ●" : v },
    { key: "model", label: "model" },
    { key: "trained_at", label: "trained", format: nb.when },
    { key: "events", label: "events", num: true, format: nb.int },
    metric("ndcg@10"), metric("recall@10"), metric("precision@10"), metric("hit_rate@10"), metric("coverage@10"),
  ], d.versions.slice().reverse(), (row) => (row.serving ? "serving" : "")));
  const c = d.choice;
  nb.fill("choice", c ? [
    nb.el("p", { class: "verdict" }, c.verdict),
    nb.el("p", { class: "note" }, "validation: " + c.validation),
    nb.el("p", { class: "note" }, "lists: " + c.lists),
    ...c.notes.map((n) => nb.el("p", { class: "note" }, n)),
    nb.el("p", { class: "note" }, nb.int(c.candidates) + " candidates in " + nb.int(c.seconds) + " s of a " + nb.int(c.budget_seconds) + " s budget; " + c.protocol + " protocol"),
    nb.table([
      { key: "rank", label: "#", num: true },
      { key: "model", label: "candidate", format: (v, row) => v + (row.chosen ? " (served)" : "") + (row.baseline ? " (baseline)" : "") },
      { key: "matrix", label: "matrix" },
      { key: "stage", label: "stage" },
      { key: "ndcg", label: "NDCG@10", num: true, format: nb.fixed(4) },
      ...(c.other_protocol ? [{ key: "other_ndcg", label: c.other_protocol + " NDCG@10", num: true, format: nb.fixed(4) }] : []),
      { key: "recall", label: "recall@10", num: true, format: nb.fixed(4) },
      { key: "coverage", label: "coverage@10", num: true, format: (v) => nb.pct(v) },
      { key: "fit_seconds", label: "fit s", num: true, format: nb.fixed(1) },
    ], c.rows, (row) => (row.chosen ? "serving" : "")),
  ] : nb.el("p", { class: "empty" }, "the version in service was trained before nextbuy train kept its choice"));
  const e = d.evaluation;
  nb.fill("evaluation", e ? [
    nb.el("p", { class: "note" }, "protocol: " + e.protocol + " · " + e.path),
    nb.table([
      { key: "model", label: "model", format: (v, row) => row.baseline ? v + " (baseline)" : v },
      metric("ndcg@10"), metric("recall@10"), metric("precision@10"), metric("coverage@10"), metric("popularity_bias"),
    ], e.models),
  ] : nb.el("p", { class: "empty" }, "no evaluation report yet: run nextbuy evaluate"));
  nb.checkFigures(d.figures, ["events", "figures"]);
});
