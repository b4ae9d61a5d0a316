/* Business impact: CTR, add-to-cart, conversion, attributed revenue and RPM of recommendations. */
"use strict";
nb.page(async () => {
  const d = await nb.getJSON("/v1/dashboard/business");
  const t = d.totals || {};
  nb.kpis([
    { label: "Item impressions", value: nb.int(t.impressions), sub: nb.int(t.lists) + " lists · last " + d.window_days + " days" },
    { label: "CTR", value: nb.pct(t.ctr, 2), sub: nb.int(t.clicks) + " clicks" },
    { label: "Add-to-cart rate", value: nb.pct(t.add_to_cart_rate, 2), sub: nb.int(t.add_to_carts) + " adds" },
    { label: "Conversion", value: nb.pct(t.purchase_rate, 2), sub: nb.int(t.purchases) + " purchases" },
    { label: "Attributed revenue", value: nb.money(t.revenue) },
    { label: "Revenue per 1000 impressions", value: nb.money(t.rpm) },
  ]);
  const percent = { scales: { y: { beginAtZero: true, title: { display: true, text: "%" } } } };
  nb.chart("chart-rates-placement", "bar", d.rates_by_placement, percent);
  nb.chart("chart-rpm-placement", "bar", d.rpm_by_placement, { scales: { y: { beginAtZero: true } } });
  nb.chart("chart-rates-position", "line", d.rates_by_position, Object.assign({}, percent, { scales: { y: percent.scales.y, x: { title: { display: true, text: "position" } } } }));
  nb.chart("chart-rpm-position", "bar", d.rpm_by_position, { scales: { y: { beginAtZero: true }, x: { title: { display: true, text: "position" } } } });
  nb.chart("chart-over-time", "line", d.over_time, percent);
  nb.chart("chart-revenue", "bar", d.revenue_over_time, { scales: { y: { beginAtZero: true } } });
  const columns = (first) => [first,
    { key: "lists", label: "lists", num: true, format: nb.int },
    { key: "impressions", label: "impressions", num: true, format: nb.int },
    { key: "clicks", label: "clicks", num: true, format: nb.int },
    { key: "ctr", label: "CTR", num: true, format: (v) => nb.pct(v, 2) },
    { key: "add_to_carts", label: "adds", num: true, format: nb.int },
    { key: "add_to_cart_rate", label: "add rate", num: true, format: (v) => nb.pct(v, 2) },
    { key: "purchases", label: "purchases", num: true, format: nb.int },
    { key: "purchase_rate", label: "conversion", num: true, format: (v) => nb.pct(v, 2) },
    { key: "revenue", label: "revenue", num: true, format: nb.money },
    { key: "rpm", label: "RPM", num: true, format: nb.money }];
  nb.fill("placements", nb.table(columns({ key: "placement", label: "placement" }), d.by_placement));
  nb.fill("positions", nb.table(columns({ key: "position", label: "position", num: true }), d.by_position));
  nb.checkFigures(d.figures, ["business"]);
});
