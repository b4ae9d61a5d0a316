"""The JSON bodies of the dashboard pages, assembled from cached figures (never a scan)."""

from __future__ import annotations

import itertools
import math
import time
from datetime import UTC, datetime
from typing import Any

from nextbuy.dashboard import quality
from nextbuy.dashboard.aggregates import DailyCounts, day_label
from nextbuy.dashboard.service import Dashboard
from nextbuy.dashboard.telemetry import PERSONAL_ROUTES, Snapshot, quantile, snapshot

EVENT_DAYS = 120  # days with events shown on the Overview
FOLD_GAP_DAYS = 14
MAX_DAY_POINTS = 730


def iso(seconds: float | None) -> str | None:
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _num(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def _chart(labels: list[str], series: dict[str, list[Any]], note: str | None = None) -> dict:
    return {
        "labels": labels,
        "datasets": [{"label": k, "data": v} for k, v in series.items()],
        "note": note,
    }


# -- overview ----------------------------------------------------------------------------------
def overview(dash: Dashboard) -> dict[str, Any]:
    now = snapshot(dash.state.metrics)
    counts = dash.events.counts
    return {
        "generated_at": iso(time.time()),
        "model": _model(dash),
        "requests": _request_totals(dash, now),
        **_request_series(dash, now),
        "routes": _routes(now),
        "event_types": _event_types(counts, now),
        "events_per_day": _events_per_day(counts),
        "figures": dash.status(),
    }


def _model(dash: Dashboard) -> dict[str, Any]:
    live = dash.state.live
    model = None if live is None else live.model
    return {
        "version": None if model is None else model.version,
        "model": None if model is None else model.model_name,
        "trained_at": None if model is None else iso(model.trained_at_ms / 1000),
        "loaded_at": None if model is None else iso(model.loaded_at_ms / 1000),
        "registry_serving": dash.state.registry.serving_state().get("version"),
        "last_load_error": dash.state.last_load_error,
    }


def _request_totals(dash: Dashboard, now: Snapshot) -> dict[str, Any]:
    p50, p95, p99 = (quantile(now.buckets, q) * 1000 for q in (0.5, 0.95, 0.99))
    return {
        "since": iso(dash.sampler.started),
        "requests": now.requests,
        "server_errors": now.server_errors,
        "client_errors": now.client_errors,
        "error_rate": now.server_errors / now.requests if now.requests else None,
        "p50_ms": _num(p50),
        "p95_ms": _num(p95),
        "p99_ms": _num(p99),
    }


def _request_series(dash: Dashboard, now: Snapshot) -> dict[str, Any]:
    intervals = dash.sampler.intervals(now)
    labels = [time.strftime("%H:%M:%S", time.gmtime(i.at)) for i in intervals]
    per_minute = [round(i.requests * 60 / i.seconds, 2) for i in intervals]
    errors = [round(i.server_errors * 60 / i.seconds, 2) for i in intervals]
    note = "UTC; one point per sampling interval since the server started (the last hour)"
    return {
        "traffic": _chart(
            labels, {"requests per minute": per_minute, "5xx per minute": errors}, note
        ),
        "latency": _chart(
            labels,
            {
                "p50 ms": [_num(i.p50_ms) for i in intervals],
                "p95 ms": [_num(i.p95_ms) for i in intervals],
                "p99 ms": [_num(i.p99_ms) for i in intervals],
            },
            note,
        ),
    }


def _routes(now: Snapshot) -> list[dict[str, Any]]:
    rows = [
        {
            "route": route,
            "requests": int(stats.get("requests", 0)),
            "server_errors": int(stats.get("server_errors", 0)),
            "client_errors": int(stats.get("client_errors", 0)),
            "p50_ms": _num(stats.get("p50_ms", math.nan)),
            "p95_ms": _num(stats.get("p95_ms", math.nan)),
            "p99_ms": _num(stats.get("p99_ms", math.nan)),
        }
        for route, stats in now.by_route.items()
    ]
    return sorted(rows, key=lambda r: -r["requests"])


def _event_types(counts: DailyCounts, now: Snapshot) -> list[dict[str, Any]]:
    totals = counts.by_type()
    kinds = sorted(set(totals) | set(now.events))
    return [
        {
            "event_type": kind,
            "events": totals[kind].events if kind in totals else 0,
            "attributed": totals[kind].attributed if kind in totals else 0,
            "revenue": round(totals[kind].revenue, 2) if kind in totals else 0.0,
            "last_event": iso(totals[kind].last_ts / 1000) if kind in totals else None,
            "via_api_since_start": int(now.events.get(kind, 0)),
        }
        for kind in kinds
    ]


def _events_per_day(counts: DailyCounts) -> dict[str, Any]:
    days = counts.days()[-EVENT_DAYS:]
    series = {
        kind: [counts.cells[(d, kind)].events if (d, kind) in counts.cells else 0 for d in days]
        for kind in counts.event_types()
    }
    note = f"UTC days with at least one event (the latest {EVENT_DAYS}); empty days are skipped"
    return _chart([day_label(d) for d in days], series, note)


# -- model quality -----------------------------------------------------------------------------
def model_quality(dash: Dashboard) -> dict[str, Any]:
    state = dash.state
    live = state.live
    versions = quality.version_history(state.registry)
    figures = dash.jobs["figures"].result or {}
    drift = figures.get("drift")
    cold = _cold_start(snapshot(state.metrics))
    return {
        "generated_at": iso(time.time()),
        "serving_version": None if live is None else live.model.version,
        "versions": versions,
        "history": _history_chart(versions),
        "evaluation": quality.evaluation_summary(state.settings.data_dir / "reports"),
        "choice": quality.choice_summary(state.registry),
        "beyond": figures.get("beyond"),
        "cold_start": cold,
        "cold_start_chart": _chart(
            ["personal", *cold["fallbacks"]],
            {
                "requests": [
                    max(cold["personal_requests"] - sum(cold["fallbacks"].values()), 0),
                    *cold["fallbacks"].values(),
                ]
            },
            "requests to the for-you routes since the server started",
        ),
        "drift": _drift(drift),
        "drift_chart": _drift_chart(drift),
        "figures": dash.status(),
    }


def _history_chart(versions: list[dict[str, Any]]) -> dict[str, Any]:
    labels = [f"{v['version']} {v['model'] or ''}".strip() for v in versions]
    series = {
        metric: [v["metrics"].get(metric) for v in versions] for metric in quality.HEADLINE_METRICS
    }
    return _chart(labels, series, "validation window metrics recorded when each was trained")


def _cold_start(now: Snapshot) -> dict[str, Any]:
    personal = sum(int(now.by_route.get(r, {}).get("requests", 0)) for r in PERSONAL_ROUTES)
    fallbacks = {kind: int(n) for kind, n in sorted(now.cold_start.items())}
    share = min(sum(fallbacks.values()) / personal, 1.0) if personal else None
    return {"personal_requests": personal, "fallbacks": fallbacks, "share": share}


def _drift(drift: dict[str, Any] | None) -> dict[str, Any] | None:
    if not drift:
        return None
    since = drift.get("purchases_since_ms")
    return {
        **{k: v for k, v in drift.items() if k != "purchases_since_ms"},
        "purchases_since": iso(since / 1000) if since else None,
    }


def _drift_chart(drift: dict[str, Any] | None) -> dict[str, Any]:
    if not drift:
        return _chart([], {}, "no model in service yet")
    return _chart(
        drift["groups"],
        {
            "recommended %": [round(100 * s, 2) for s in drift["recommended_share"]],
            "purchased %": [round(100 * s, 2) for s in drift["purchased_share"]],
        },
        f"share by {drift['grouping']}: {drift['recommended_from']} against the latest purchases",
    )


# -- data --------------------------------------------------------------------------------------
def data(dash: Dashboard) -> dict[str, Any]:
    counts = dash.events.counts
    audit = dash.jobs["audit"].result
    return {
        "generated_at": iso(time.time()),
        "events": counts.covered_events,
        "undated_events": counts.undated,
        **_freshness(counts),
        "gaps": gaps(counts),
        "events_over_time": events_over_time(counts),
        "audit": audit,
        "audit_computed_at": iso(audit.get("computed_at")) if audit else None,
        "imports": _imports(dash),
        "figures": dash.status(),
    }


def _freshness(counts: DailyCounts) -> dict[str, Any]:
    now = time.time()
    rows = [
        {
            "event_type": kind,
            "last_event": iso(total.last_ts / 1000),
            "age_seconds": round(now - total.last_ts / 1000, 1) if total.last_ts else None,
            "events": total.events,
        }
        for kind, total in sorted(counts.by_type().items())
    ]
    # a log axis cannot show 0: anything fresher than a minute is drawn as a minute old
    hours = [
        float(f"{max(r['age_seconds'], 60) / 3600:.4g}") if r["age_seconds"] is not None else None
        for r in rows
    ]
    chart = _chart(
        [r["event_type"] for r in rows],
        {"hours since the last event": hours},
        "log scale (a minute at least): a type that stopped arriving stands out",
    )
    return {"freshness": rows, "freshness_chart": chart}


def gaps(counts: DailyCounts) -> dict[str, Any]:
    """Days without any event between the first and the last day with one."""
    days = counts.days()
    if not days:
        return {
            "first_day": None,
            "last_day": None,
            "days_in_range": 0,
            "days_without_events": 0,
            "longest_gap_days": 0,
            "gap_ranges": [],
        }
    ranges = [(a + 1, b - 1) for a, b in itertools.pairwise(days) if b - a > 1]
    return {
        "first_day": day_label(days[0]),
        "last_day": day_label(days[-1]),
        "days_in_range": days[-1] - days[0] + 1,
        "days_without_events": sum(b - a + 1 for a, b in ranges),
        "longest_gap_days": max((b - a + 1 for a, b in ranges), default=0),
        # the longest first: a dead tracking feed matters more than a quiet Sunday
        "gap_ranges": [
            [day_label(a), day_label(b)]
            for a, b in sorted(ranges, key=lambda r: (r[0] - r[1], r[0]))[:50]
        ],
    }


def events_over_time(counts: DailyCounts) -> dict[str, Any]:
    """Every day from the first event to the last, zeros included, so gaps show as holes;
    a run of more than FOLD_GAP_DAYS empty days becomes one labelled zero point, so years
    between an old import and live traffic do not squeeze the rest into a line."""
    per_day = counts.per_day()
    if not per_day:
        return _chart([], {}, "no events yet")
    labels: list[str] = []
    totals: list[int] = []
    days = sorted(per_day)
    for day, following in zip(days, [*days[1:], None], strict=True):
        labels.append(day_label(day))
        totals.append(per_day[day])
        if following is None:
            continue
        empty = following - day - 1
        if empty > FOLD_GAP_DAYS:
            labels.append(f"{day_label(day + 1)} … {day_label(following - 1)} ({empty} empty days)")
            totals.append(0)
        else:
            for gap_day in range(day + 1, following):
                labels.append(day_label(gap_day))
                totals.append(0)
    note = f"per UTC day, zeros included; empty runs over {FOLD_GAP_DAYS} days fold into one point"
    return _chart(labels[-MAX_DAY_POINTS:], {"events per day": totals[-MAX_DAY_POINTS:]}, note)


def _imports(dash: Dashboard) -> list[dict[str, Any]]:
    frame = dash.state.store.imports()
    if frame.empty:
        return []
    rows = frame.sort_values("import_id", ascending=False).head(20)
    return [
        {
            "import_id": int(r.import_id),
            "kind": str(r.kind),
            "source": str(r.source),
            "finished_at": iso(r.finished_at / 1000) if r.finished_at else None,
            "rows": int(r.rows),
            "stored": int(r.stored),
            "duplicates": int(r.duplicates),
            "rejected": int(r.rejected),
        }
        for r in rows.itertuples(index=False)
    ]


# -- business impact ---------------------------------------------------------------------------
def _pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 3)


def business(dash: Dashboard) -> dict[str, Any]:
    found = dash.jobs["business"].result or {}
    placements = found.get("by_placement", [])
    positions = found.get("by_position", [])
    days = found.get("by_day", [])
    window = found.get("window_days")
    note = f"lists shown in the last {window} days; outcomes sent with their recommendation_id"
    return {
        "generated_at": iso(time.time()),
        "window_days": window,
        "since": iso(found["since_ms"] / 1000) if found.get("since_ms") else None,
        "totals": found.get("totals") or None,
        "by_placement": placements,
        "by_position": positions,
        "by_placement_position": found.get("by_placement_position", []),
        "rates_by_placement": _rate_chart(placements, "placement", note),
        "rpm_by_placement": _chart(
            [str(r["placement"]) for r in placements],
            {"revenue per 1000 impressions": [_round(r.get("rpm")) for r in placements]},
            note,
        ),
        "rates_by_position": _rate_chart(positions, "position", note),
        "rpm_by_position": _chart(
            [str(r["position"]) for r in positions],
            {"revenue per 1000 impressions": [_round(r.get("rpm")) for r in positions]},
            note,
        ),
        "over_time": _chart(
            [str(r["day"]) for r in days],
            {
                "CTR %": [_pct(r.get("ctr")) for r in days],
                "add-to-cart %": [_pct(r.get("add_to_cart_rate")) for r in days],
                "purchase %": [_pct(r.get("purchase_rate")) for r in days],
            },
            "per UTC day the lists were shown",
        ),
        "revenue_over_time": _chart(
            [str(r["day"]) for r in days],
            {"attributed revenue": [_round(r.get("revenue")) for r in days]},
            "purchases sent with the recommendation_id of a list that showed the item",
        ),
        "figures": dash.status(),
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def _rate_chart(rows: list[dict[str, Any]], key: str, note: str) -> dict[str, Any]:
    return _chart(
        [str(r[key]) for r in rows],
        {
            "CTR %": [_pct(r.get("ctr")) for r in rows],
            "add-to-cart %": [_pct(r.get("add_to_cart_rate")) for r in rows],
            "purchase %": [_pct(r.get("purchase_rate")) for r in rows],
        },
        note + " (per item impression)",
    )


# -- experiments -------------------------------------------------------------------------------
def experiments(dash: Dashboard) -> dict[str, Any]:
    found = dash.jobs["experiments"].result or []
    return {
        "generated_at": iso(time.time()),
        "experiments": [_experiment_view(e) for e in found],
        "figures": dash.status(),
    }


def _experiment_view(found: dict[str, Any]) -> dict[str, Any]:
    metrics = found["metrics"]
    names = [v["name"] for v in found["configured_variants"] if not v["shadow"]]
    charts = {
        metric: _interval_chart(metrics, metric, names)
        for metric in ("ctr", "conversion", "revenue_per_visitor")
    }
    return {
        **{k: v for k, v in found.items() if k not in ("traffic", "allocations", "over_time")},
        "intervals": charts,
        "traffic_chart": _traffic_chart(found["traffic"]),
        "allocation_chart": _allocation_chart(found["allocations"]),
        "lift_chart": _lift_chart(found["over_time"]),
    }


def _interval_chart(metrics: list[dict[str, Any]], metric: str, names: list[str]) -> dict:
    """Per variant: the estimate and its interval (a floating bar [low, high])."""
    rows = {m["variant"]: m for m in metrics if m.get("metric") == metric}
    variants = [n for n in names if n in rows] + sorted(set(rows) - set(names))
    value = [_round(rows[v].get("value"), 6) for v in variants]
    band = [
        [_round(rows[v].get("ci_low"), 6), _round(rows[v].get("ci_high"), 6)]
        if rows[v].get("ci_low") is not None and rows[v].get("ci_high") is not None
        else None
        for v in variants
    ]
    return {
        "labels": variants,
        "datasets": [
            {"label": "estimate", "data": value, "type": "line"},
            {"label": "95% interval", "data": band, "type": "bar"},
        ],
        "note": f"{metric.replace('_', ' ')} per variant with its confidence interval",
    }


def _time_labels(stamps_ms: list[int]) -> list[str]:
    """UTC labels as precise as the span needs: seconds within an hour, days beyond two."""
    span = (max(stamps_ms) - min(stamps_ms)) / 1000 if stamps_ms else 0
    pattern = "%H:%M:%S" if span < 3600 else "%m-%d %H:%M" if span < 2 * 86_400 else "%Y-%m-%d"
    return [time.strftime(pattern, time.gmtime(t / 1000)) for t in stamps_ms]


def _traffic_chart(traffic: list[dict[str, Any]]) -> dict[str, Any]:
    bins = sorted({int(r["bin_start_ms"]) for r in traffic})
    variants = sorted({str(r["variant"]) for r in traffic})
    share = {(int(r["bin_start_ms"]), str(r["variant"])): r.get("share") for r in traffic}
    return _chart(
        _time_labels(bins),
        {v: [_pct(share.get((b, v), 0.0)) for b in bins] for v in variants},
        "share of shown lists per variant (%), in equal time windows (UTC)",
    )


def _allocation_chart(allocations: list[dict[str, Any]]) -> dict[str, Any]:
    times = sorted({int(r["computed_at"]) for r in allocations})
    variants = sorted({str(r["variant"]) for r in allocations})
    weight = {(int(r["computed_at"]), str(r["variant"])): r.get("weight") for r in allocations}
    return _chart(
        _time_labels(times),
        {v: [_pct(weight.get((t, v))) for t in times] for v in variants},
        "bandit traffic weight per variant (%) at each recomputation",
    )


def _lift_chart(over_time: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [r for r in over_time if r.get("metric") == "ctr"]
    cuts = sorted({int(r["cut_ms"]) for r in rows})
    variants = sorted({str(r["variant"]) for r in rows})
    lift = {(int(r["cut_ms"]), str(r["variant"])): r.get("lift") for r in rows}
    return _chart(
        _time_labels(cuts),
        {f"{v} CTR lift %": [_pct(lift.get((c, v))) for c in cuts] for v in variants},
        "cumulative CTR lift against control at each look",
    )
