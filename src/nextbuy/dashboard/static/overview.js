/* Overview: requests, latency, errors, events per type over time, model in service. */
"use strict";
nb.page(async () => {
  const d = await nb.getJSON("/v1/dashboard/overview");
  const r = d.requests;
  nb.kpis([
    { label: "Requests", value: nb.int(r.requests), sub: "since " + nb.when(r.since) },
    { label: "Error rate (5xx)", value: r.error_rate === null ? null : nb.pct(r.error_rate, 2), sub: nb.int(r.client_errors) + " client errors (4xx)" },
    { label: "Latency p50", value: nb.ms(r.p50_ms) },
    { label: "Latency p95", value: nb.ms(r.p95_ms) },
    { label: "Latency p99", value: nb.ms(r.p99_ms) },
    { label: "Model in service", value: d.model.version || "none", sub: d.model.model || "" },
  ]);
  nb.chart("chart-traffic", "line", d.traffic, { scales: { y: { beginAtZero: true } } });
  nb.chart("chart-latency", "line", d.latency, { scales: { y: { beginAtZero: true, title: { display: true, text: "ms" } } } });
  nb.chart("chart-events", "bar", d.events_per_day, { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } });
  const m = d.model;
  nb.fill("model", nb.facts([
    ["version", m.version], ["model", m.model], ["trained", nb.when(m.trained_at)],
    ["loaded", nb.when(m.loaded_at)], ["registry says", m.registry_serving],
    ["last load error", m.last_load_error || "none"],
  ]));
  nb.fill("event-types", nb.table([
    { key: "event_type", label: "type" },
    { key: "events", label: "events", num: true, format: nb.int },
    { key: "attributed", label: "attributed", num: true, format: nb.int },
    { key: "via_api_since_start", label: "via API since start", num: true, format: nb.int },
    { key: "last_event", label: "last event", format: nb.when },
  ], d.event_types));
  nb.fill("routes", nb.table([
    { key: "route", label: "route" },
    { key: "requests", label: "requests", num: true, format: nb.int },
    { key: "server_errors", label: "5xx", num: true, format: nb.int },
    { key: "client_errors", label: "4xx", num: true, format: nb.int },
    { key: "p50_ms", label: "p50", num: true, format: nb.ms },
    { key: "p95_ms", label: "p95", num: true, format: nb.ms },
    { key: "p99_ms", label: "p99", num: true, format: nb.ms },
  ], d.routes));
  nb.checkFigures(d.figures, ["events"]);
});
