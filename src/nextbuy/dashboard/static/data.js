/* Data: audit, freshness, gaps, imports. */
"use strict";
nb.page(async () => {
  const d = await nb.getJSON("/v1/dashboard/data");
  const a = d.audit || {};
  const g = d.gaps;
  nb.kpis([
    { label: "Events", value: nb.int(d.events), sub: nb.int(d.undated_events) + " undated" },
    { label: "Customers", value: nb.int(a.users) },
    { label: "Items in events", value: nb.int(a.items_in_events), sub: nb.int(a.catalog_items) + " in the catalogue" },
    { label: "Days without events", value: nb.int(g.days_without_events), sub: "of " + nb.int(g.days_in_range) },
    { label: "Duplicate rows", value: nb.int(a.duplicate_rows) },
  ]);
  nb.chart("chart-over-time", "bar", d.events_over_time, { scales: { y: { beginAtZero: true } } });
  nb.chart("chart-freshness", "bar", d.freshness_chart, { indexAxis: "y", scales: { x: { type: "logarithmic" } } });
  nb.fill("freshness", nb.table([
    { key: "event_type", label: "type" },
    { key: "events", label: "events", num: true, format: nb.int },
    { key: "last_event", label: "last event", format: nb.when },
    { key: "age_seconds", label: "age", num: true, format: nb.age },
  ], d.freshness));
  nb.fill("gaps", [
    nb.facts([["first day", g.first_day], ["last day", g.last_day], ["days in range", nb.int(g.days_in_range)],
      ["days without events", nb.int(g.days_without_events)], ["longest gap", nb.int(g.longest_gap_days) + " days"]]),
    nb.el("h3", {}, "Longest gaps"),
    nb.table([{ key: 0, label: "from" }, { key: 1, label: "to" }], g.gap_ranges.slice(0, 10)),
  ]);
  const per = (x) => (x ? nb.fixed(1)(x.median) + " median · " + nb.int(x.max) + " max" : null);
  nb.fill("audit", d.audit ? nb.facts([
    ["computed", nb.when(d.audit_computed_at)],
    ["range", (nb.when(a.first_event) || "–") + " → " + (nb.when(a.last_event) || "–")],
    ["events per customer", per(a.events_per_user)],
    ["events per item", per(a.events_per_item)],
    ["long-tail share", nb.pct(a.long_tail_share)],
    ["customers with 3+ purchases", nb.int(a.users_with_3_purchases) + " (" + nb.pct(a.share_users_with_3_purchases) + ")"],
    ["anonymous events", nb.int(a.anonymous_events)],
    ["items missing from catalogue", nb.int(a.items_missing_from_catalog)],
    ["catalogue items never seen", nb.int(a.catalog_items_never_interacted)],
    ["profiles", nb.int(a.profiles)],
  ]) : nb.el("p", { class: "empty" }, "the audit is being computed in the background"));
  nb.fill("imports", nb.table([
    { key: "import_id", label: "#", num: true },
    { key: "kind", label: "kind" },
    { key: "source", label: "source" },
    { key: "finished_at", label: "finished", format: nb.when },
    { key: "rows", label: "rows", num: true, format: nb.int },
    { key: "stored", label: "stored", num: true, format: nb.int },
    { key: "duplicates", label: "duplicates", num: true, format: nb.int },
    { key: "rejected", label: "rejected", num: true, format: nb.int },
  ], d.imports));
  nb.checkFigures(d.figures, ["events", "audit"]);
});
