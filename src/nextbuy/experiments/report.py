"""The experiment report: one self-contained HTML page (inline SVG) and a JSON of every number.

Sections: the verdict per variant with intervals, lifts and p-values; lift over time with
its confidence band (fixed-horizon, shaded) and confidence sequence (always-valid, dashed);
traffic split over time (and the bandit's allocations); per-segment lifts; SRM, power,
peeking protection; shadow variants; position bias. Plots are drawn by matplotlib's SVG
backend through `Figure`, so nothing needs a display and the page works offline.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nextbuy.experiments.reporting import ExperimentResults
from nextbuy.experiments.stats import PEEKING_METHOD

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
SUMMARY_METRICS = (
    ("ctr", "CTR (clicks / list)", "{:.4f}"),
    ("add_to_cart_rate", "add-to-cart / list", "{:.4f}"),
    ("conversion", "conversion", "{:.2%}"),
    ("revenue_per_visitor", "revenue / visitor", "{:.2f}"),
    ("aov", "AOV", "{:.2f}"),
)

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
 body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
        max-width: 1200px; padding: 0 1rem; color: #222; }
 h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem;
 border-bottom: 1px solid #ddd; } p.meta { color: #666; margin-top: 0; }
 table { border-collapse: collapse; font-size: .85rem; }
 th, td { padding: .25rem .55rem; border-bottom: 1px solid #eee; text-align: right; }
 th:first-child, td:first-child { text-align: left; } th { background: #f5f5f5; }
 td.win { background: #e3f4e1; } td.loss { background: #fbe3e3; }
 .plot svg { max-width: 100%; height: auto; } .note { color: #555; font-size: .85rem;
 max-width: 62rem; } .alarm { color: #a00; font-weight: bold; }
</style></head><body>
<h1>{{ title }}</h1>
<p class="meta">experiment <b>{{ e.name }}</b> · layer {{ e.layer }} · status {{ e.status }} ·
 allocation {{ e.allocation }} · control <b>{{ control }}</b> · alpha {{ e.alpha }} ·
 generated {{ generated }}{% if json_name %} · every number in
 <a href="{{ json_name }}">{{ json_name }}</a>{% endif %}</p>
<h2>Verdict per variant</h2>
<p class="note">Impressions are lists shown; clicks, add-to-carts and orders are attributed to a
 list directly (sent with its recommendation_id) or, for purchases, by view-through (a shown item
 bought by the same user within {{ view_through }} h). Intervals are {{ level }} %;
 <b>significant</b> uses the always-valid p-value (see peeking protection below).</p>
<table><thead><tr>{% for c in table.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead><tbody>
{% for row in table.rows %}<tr>{% for cell in row %}<td class="{{ cell.cls }}">{{ cell.text }}</td>
{% endfor %}</tr>{% endfor %}</tbody></table>
{% for note in notes %}<p class="note{% if 'mismatch' in note %} alarm{% endif %}">{{ note }}</p>
{% endfor %}
<h2>Lift over time</h2>
<p class="note">Cumulative lift against {{ control }} at each look. Shaded: the fixed-horizon
 {{ level }} % interval (valid at one pre-planned look only); dashed: the always-valid confidence
 sequence, which may be read at every look.</p>
<div class="plot">{{ lift_svg | safe }}</div>
<h2>Traffic split</h2><div class="plot">{{ traffic_svg | safe }}</div>
<p class="note">{{ srm_text }}</p>
<h2>Per-segment results</h2>
<p class="note">Exploratory: with many segments a few intervals exclude zero by chance.</p>
<div class="plot">{{ segment_svg | safe }}</div>
{% if segments %}<table><thead><tr>{% for c in segments.columns %}<th>{{ c }}</th>{% endfor %}
</tr></thead><tbody>{% for row in segments.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>
{% endfor %}</tr>{% endfor %}</tbody></table>{% endif %}
<h2>Power</h2><p class="note">{{ power_text }}</p>
<h2>Peeking protection</h2><p class="note">{{ peeking }}</p>
{% if shadow %}<h2>Shadow variants</h2>
<p class="note">Lists computed for the same requests but not shown, against what the users then
 did. The shown list has a head start (users click what they see): compare shadows with each other
 and read the purchase hit rate first.</p>
<table><thead><tr>{% for c in shadow.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead><tbody>
{% for row in shadow.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>{% endif %}
{% if bias %}<h2>Position bias</h2><p class="note">Examination probability by position relative
 to position 1, fitted by EM (position-based model) on {{ bias_source }}. Debiased CTR weights each
 click by 1/θ(position).</p><div class="plot">{{ bias_svg | safe }}</div>{% endif %}
</body></html>
"""


def write_report(results: ExperimentResults, html_path: Path) -> tuple[Path, Path]:
    """Write the HTML report and, beside it, the JSON of every number."""
    html_path = Path(html_path)
    json_path = html_path.with_suffix(".json")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(results.to_json(), indent=2, default=str)
    _atomic_write(json_path, payload)
    _atomic_write(html_path, render_html(results, json_name=json_path.name))
    return html_path, json_path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def render_html(results: ExperimentResults, json_name: str = "") -> str:
    e = results.experiment
    analysis = results.analysis
    bias = results.position_bias
    return jinja2.Template(TEMPLATE, autoescape=True).render(
        title=f"nextbuy experiment: {e.name}",
        e=e,
        control=None if analysis is None else analysis.control,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        json_name=json_name,
        view_through=f"{results.view_through_hours:g}",
        level=f"{(1 - e.alpha) * 100:g}",
        table=_summary_table(results),
        notes=results.notes,
        lift_svg=_lift_plot(results),
        traffic_svg=_traffic_plot(results),
        srm_text=_srm_text(results),
        segment_svg=_segment_plot(results),
        segments=_segment_table(results),
        power_text=_power_text(results.power),
        peeking=_peeking_text(results),
        shadow=_plain_table(results.shadow),
        bias=bias,
        bias_source="lists served in random order (unconfounded)"
        if bias and bias.get("source") == "shuffled"
        else "all shown lists (relevant items sit on top, so deep positions look less examined "
        "than they are)",
        bias_svg=_bias_plot(bias) if bias else "",
    )


# -- tables --------------------------------------------------------------------------------


def _fmt(template: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return template.format(value)


def _summary_table(results: ExperimentResults) -> dict[str, Any]:
    wide = results.summary()
    columns = ["variant", "units", "lists", "clicks", "orders", "revenue"]
    columns += [label for _, label, _ in SUMMARY_METRICS] + ["significant"]
    rows = []
    analysis = results.analysis
    for record in wide.to_dict(orient="records"):
        row = [{"text": record["variant"], "cls": ""}]
        row += [{"text": f"{record[c]:,.0f}", "cls": ""} for c in ("units", "impressions")]
        row += [{"text": f"{record[c]:,.0f}", "cls": ""} for c in ("clicks", "orders")]
        row.append({"text": f"{record['revenue']:,.2f}", "cls": ""})
        significant = []
        for metric, _, template in SUMMARY_METRICS:
            text = f"{_fmt(template, record.get(metric))} "
            text += f"[{_fmt(template, record.get(f'{metric}_ci_low'))}, "
            text += f"{_fmt(template, record.get(f'{metric}_ci_high'))}]"
            lift = record.get(f"{metric}_lift")
            cls = ""
            if lift is not None and not pd.isna(lift):
                low = _fmt("{:+.1%}", record.get(f"{metric}_lift_ci_low"))
                high = _fmt("{:+.1%}", record.get(f"{metric}_lift_ci_high"))
                text += (
                    f"; lift {_fmt('{:+.1%}', lift)} [{low}, {high}], "
                    f"p {_fmt('{:.2g}', record.get(f'{metric}_p_value'))}, always-valid p "
                    f"{_fmt('{:.2g}', record.get(f'{metric}_p_value_always_valid'))}"
                )
                p_valid = record.get(f"{metric}_p_value_always_valid")
                if p_valid is not None and p_valid < results.experiment.alpha:
                    significant.append(metric)
                    cls = "win" if lift > 0 else "loss"
            row.append({"text": text, "cls": cls})
        control = analysis is not None and record["variant"] == analysis.control
        row.append({"text": "control" if control else (", ".join(significant) or "no"), "cls": ""})
        rows.append(row)
    return {"columns": columns, "rows": rows}


def _segment_table(results: ExperimentResults) -> dict[str, Any] | None:
    frame = results.segments
    if frame is None or frame.empty:
        return None
    shown = frame[["segment", "value", "variant", "metric", "units", "lift", "lift_ci_low",
                   "lift_ci_high", "p_value"]]  # fmt: skip
    rows = [
        [
            r.segment,
            r.value,
            r.variant,
            r.metric,
            f"{r.units:,}",
            _fmt("{:+.1%}", r.lift),
            f"[{_fmt('{:+.1%}', r.lift_ci_low)}, {_fmt('{:+.1%}', r.lift_ci_high)}]",
            _fmt("{:.2g}", r.p_value),
        ]
        for r in shown.itertuples()
    ]
    columns = ["segment", "value", "variant", "metric", "units", "lift", "interval", "p"]
    return {"columns": columns, "rows": rows}


def _plain_table(frame: pd.DataFrame) -> dict[str, Any] | None:
    if frame is None or frame.empty:
        return None
    rows = [
        [f"{v:.4f}" if isinstance(v, float) else str(v) for v in record]
        for record in frame.itertuples(index=False)
    ]
    return {"columns": list(frame.columns), "rows": rows}


def _srm_text(results: ExperimentResults) -> str:
    analysis = results.analysis
    if analysis is None or analysis.srm is None:
        if results.experiment.allocation == "thompson":
            return "A bandit moves the split on purpose: no sample-ratio check."
        return "No sample-ratio check yet."
    srm = analysis.srm
    verdict = "MISMATCH" if srm.mismatch else "no mismatch"
    observed = ", ".join(f"{k} {v:,}" for k, v in srm.observed.items())
    return (
        f"Sample-ratio check (chi-square against the planned split): {verdict}, "
        f"p = {srm.p_value:.3g} (alarm below 0.001). Units: {observed}."
    )


def _power_text(power: dict[str, Any]) -> str:
    if "units_per_arm_needed" not in power:
        return f"Power analysis: {power.get('note', 'not enough data yet')}."
    needed, now = power["units_per_arm_needed"], power["units_per_arm_now"]
    mde_now = power.get("mde_now")
    return (
        f"Conversion baseline {power['baseline']:.2%} in the control. Detecting a "
        f"{power['mde_relative']:.0%} relative lift with 80 % power at alpha "
        f"{power['alpha']:g} needs {needed:,} units per arm; the smallest arm has {now:,}, "
        f"enough to detect {_fmt('{:.0%}', mde_now)} now."
    )


def _peeking_text(results: ExperimentResults) -> str:
    return (
        "Results are computed on demand and may be read at any time, so a fixed-horizon "
        "p-value would inflate false positives with every look. "
        + PEEKING_METHOD
        + " The report marks a difference significant only when its always-valid p-value is "
        f"below alpha = {results.experiment.alpha:g}."
    )


# -- plots ---------------------------------------------------------------------------------


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return _METADATA.sub("", text[text.index("<svg") :])


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=96)
    fig.set_layout_engine("constrained")
    return fig


def _times(ms: pd.Series) -> pd.Series:
    return pd.to_datetime(ms, unit="ms", utc=True).dt.tz_localize(None)


def _lift_plot(results: ExperimentResults) -> str:
    frame = results.over_time
    if frame is None or frame.empty:
        return "<p class='note'>Not enough data for a trend yet.</p>"
    metrics = list(dict.fromkeys(frame["metric"]))
    fig = _figure(3.8 * len(metrics), 3.0)
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for ax, metric in zip(axes, metrics, strict=True):
        part = frame[frame["metric"] == metric]
        for color, (variant, rows) in zip(PALETTE[1:], part.groupby("variant"), strict=False):
            when = _times(rows["cut_ms"])
            ax.fill_between(when, rows["lift_ci_low"], rows["lift_ci_high"], color=color,
                            alpha=0.2, linewidth=0)  # fmt: skip
            ax.plot(when, rows["lift_av_low"], "--", color=color, linewidth=0.8)
            ax.plot(when, rows["lift_av_high"], "--", color=color, linewidth=0.8)
            ax.plot(when, rows["lift"], "-o", ms=3, color=color, label=str(variant))
        ax.axhline(0, color="#444", linewidth=0.8)
        ax.set_title(f"{metric} lift")
        ax.yaxis.set_major_formatter(lambda v, _: f"{v:+.0%}")
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, frameon=False)
    return _svg(fig)


def _traffic_plot(results: ExperimentResults) -> str:
    traffic = results.traffic
    if traffic is None or traffic.empty:
        return "<p class='note'>No traffic yet.</p>"
    wide = traffic.pivot_table(index="bin_start_ms", columns="variant", values="share").fillna(0)
    allocations = results.allocations
    panels = 2 if allocations is not None and not allocations.empty else 1
    fig = _figure(4.6 * panels, 2.8)
    axes = np.atleast_1d(fig.subplots(1, panels))
    when = _times(pd.Series(wide.index))
    colors = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(wide.columns)}
    axes[0].stackplot(when, wide.T.to_numpy(), labels=[str(c) for c in wide.columns],
                      colors=[colors[c] for c in wide.columns], alpha=0.8)  # fmt: skip
    axes[0].set_title("share of lists served")
    axes[0].set_ylim(0, 1)
    if panels == 2:
        for variant, rows in allocations.groupby("variant"):
            axes[1].step(_times(rows["computed_at"]), rows["weight"], where="post",
                         color=colors.get(variant), label=str(variant))  # fmt: skip
        axes[1].set_title("bandit allocation")
        axes[1].set_ylim(0, 1)
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, frameon=False, loc="lower left")
    return _svg(fig)


def _segment_plot(results: ExperimentResults) -> str:
    frame = results.segments
    if frame is None or frame.empty:
        return "<p class='note'>No segment has enough units in every arm yet.</p>"
    part = frame[frame["metric"] == "ctr"].reset_index(drop=True)
    if part.empty:
        return ""
    labels = [f"{r.segment}={r.value} ({r.variant})" for r in part.itertuples()]
    fig = _figure(6.0, 0.3 * len(part) + 1.0)
    ax = fig.subplots()
    y = np.arange(len(part))[::-1]
    low = (part["lift"] - part["lift_ci_low"]).clip(lower=0)
    high = (part["lift_ci_high"] - part["lift"]).clip(lower=0)
    ax.errorbar(part["lift"], y, xerr=[low, high], fmt="o", color=PALETTE[0], capsize=3)
    ax.axvline(0, color="#444", linewidth=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:+.0%}")
    ax.set_title("CTR lift per segment")
    ax.grid(alpha=0.3, axis="x")
    return _svg(fig)


def _bias_plot(bias: dict[str, Any]) -> str:
    theta = bias["examination"]
    fig = _figure(4.0, 2.6)
    ax = fig.subplots()
    ax.bar(np.arange(1, len(theta) + 1), theta, color=PALETTE[0])
    ax.set_xlabel("position")
    ax.set_ylabel("θ (relative to 1)")
    ax.grid(alpha=0.3, axis="y")
    return _svg(fig)
