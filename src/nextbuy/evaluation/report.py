"""The evaluation report: a self-contained HTML page (inline SVG plots) and a JSON of all numbers.

The page works offline: no script, font or stylesheet is fetched; plots are drawn by
matplotlib's SVG backend (through `Figure`, so no GUI backend or pyplot state is involved).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from rich import box
from rich.console import Console
from rich.table import Table

from nextbuy.evaluation.leaderboard import leaderboard_rows, other_protocol
from nextbuy.evaluation.runner import RANKING_METRICS, EvaluationResult

CURVE_METRICS: tuple[str, ...] = ("ndcg", "recall", "precision")
SEGMENT_METRIC_BASE = "ndcg"
TABLE_EXTRA: tuple[str, ...] = (
    "coverage",
    "diversity",
    "novelty",
    "popularity_bias",
    "personalisation",
    "fit_seconds",
    "recommend_seconds",
)
BASELINE_COLORS: tuple[str, ...] = ("#b3b3b3", "#5f5f5f", "#a08c5a")
PALETTE: tuple[str, ...] = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
)

_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)

__all__ = ["print_table", "render_html", "write_report"]


# --------------------------------------------------------------------------- files


def write_report(
    result: EvaluationResult,
    html_path: Path,
    json_path: Path | None = None,
    title: str = "nextbuy offline evaluation",
    *,
    others: Sequence[EvaluationResult] = (),
    choice: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write the HTML report and, beside it (or at `json_path`), the JSON of every number.

    `result` is the protocol the lists follow; `others` the same models under other
    protocols; `choice` the leaderboard `nextbuy train` chose the served model from.
    """
    html_path = Path(html_path)
    json_path = Path(json_path) if json_path is not None else html_path.with_suffix(".json")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    payload = result.to_json()
    payload["other_protocols"] = {other.protocol: other.to_json() for other in others}
    payload["choice"] = _jsonable_choice(choice)
    _atomic_write(json_path, json.dumps(payload, indent=2, allow_nan=False))
    html = render_html(result, title, json_name=json_path.name, others=others, choice=choice)
    _atomic_write(html_path, html)
    return html_path, json_path


def _jsonable_choice(choice: Mapping[str, Any] | None) -> Any:
    return None if choice is None else json.loads(json.dumps(choice, default=_no_nan))


def _no_nan(value: Any) -> Any:
    return None


def _atomic_write(path: Path, text: str) -> None:
    # written beside and renamed, so a reader never sees half a report
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def render_html(
    result: EvaluationResult,
    title: str = "nextbuy offline evaluation",
    json_name: str = "",
    *,
    others: Sequence[EvaluationResult] = (),
    choice: Mapping[str, Any] | None = None,
) -> str:
    """The report page as one string."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("nextbuy.evaluation", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
    )
    template = env.get_template("report.html.j2")
    k = result.beyond_k
    return template.render(
        title=title,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        protocol=result.protocol,
        k=k,
        columns=_table_columns(result),
        rows=_table_rows(result),
        errors=_errors(result),
        summary=_summary_rows(result.split_summary),
        curve_svg=_curve_plot(result),
        scatter_svg=_coverage_plot(result),
        segment_svg=_segment_plot(result),
        category_svg=_category_plot(result),
        json_name=json_name,
        others=[
            {"protocol": o.protocol, "columns": _table_columns(o), "rows": _table_rows(o)}
            for o in others
        ],
        choice=None if choice is None else _choice_view(choice),
    )


LEADERBOARD_ROWS = 30


def _finite(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "–"


def _choice_view(choice: Mapping[str, Any]) -> dict[str, Any]:
    """The leaderboard `nextbuy train` chose from, formatted for the page."""

    rows = []
    for row in leaderboard_rows(choice, LEADERBOARD_ROWS):
        rows.append(
            {
                **row,
                "ndcg": _finite(row["ndcg@10"]),
                "other_ndcg": _finite(row["other"]),
                "recall": _finite(row["recall@10"]),
                "coverage": f"{row['coverage@10']:.1%}",
                "fit": _finite(row["fit_seconds"], 1),
            }
        )
    return {
        "protocol": choice["protocol"],
        "reason": choice["protocol_reason"],
        "held_out": choice.get("validation_reason", ""),
        "other": other_protocol(choice),
        "verdict": choice["verdict"],
        "notes": choice.get("notes", []),
        "rows": rows,
        "trials": len(choice["trials"]),
        "seconds": choice["seconds"],
        "budget": choice["budget_seconds"],
    }


# --------------------------------------------------------------------------- table


def _table_columns(result: EvaluationResult) -> list[str]:
    k = result.beyond_k
    ranking = [f"{m}@{k}" for m in RANKING_METRICS]
    present = set(result.table.columns)
    return ["model", *[c for c in (*ranking, *TABLE_EXTRA) if c in present], "n_users_evaluated"]


def _table_rows(result: EvaluationResult) -> list[dict[str, Any]]:
    columns = _table_columns(result)
    best = _best_per_column(result, columns)
    rows = []
    for record in result.table.to_dict(orient="records"):
        cells = [
            {"text": _fmt(col, record.get(col)), "best": best.get(col) == record["model"]}
            for col in columns
        ]
        rows.append({"baseline": bool(record.get("baseline")), "cells": cells})
    return rows


def _best_per_column(result: EvaluationResult, columns: Sequence[str]) -> dict[str, str]:
    """The model with the highest value of each accuracy column (marked in bold)."""
    table = result.table
    best = {}
    for col in columns:
        if "@" in col and col in table.columns and table[col].notna().any():
            best[col] = str(table.loc[table[col].idxmax(), "model"])
    return best


def _fmt(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if column.endswith("_seconds"):
        return f"{value:.3f}"
    if isinstance(value, float | np.floating):
        return f"{value:.4f}"
    return str(value)


def _errors(result: EvaluationResult) -> list[tuple[str, str]]:
    if "error" not in result.table.columns:
        return []
    failed = result.table[result.table["error"].notna()]
    return [(str(r.model), str(r.error)) for r in failed.itertuples()]


def _summary_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in summary.items():
        if value is None or value == {}:
            continue
        text = json.dumps(value) if isinstance(value, dict | list) else str(value)
        rows.append((key.replace("_", " "), text))
    return rows


# --------------------------------------------------------------------------- plots


def _colors(result: EvaluationResult) -> dict[str, str]:
    out: dict[str, str] = {}
    models, baselines = 0, 0
    for record in result.table.itertuples():
        if record.baseline:
            out[str(record.model)] = BASELINE_COLORS[baselines % len(BASELINE_COLORS)]
            baselines += 1
        else:
            out[str(record.model)] = PALETTE[models % len(PALETTE)]
            models += 1
    return out


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    # keep only the <svg> element (a prolog and doctype are not valid inside HTML), and drop
    # the RDF metadata block: it names the generator, nothing a reader needs
    return _METADATA.sub("", text[text.index("<svg") :])


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=96)
    fig.set_layout_engine("constrained")
    return fig


def _curve_plot(result: EvaluationResult) -> str:
    by_k = result.by_k
    colors = _colors(result)
    baselines = set(result.baselines)
    fig = _new_figure(3.3 * len(CURVE_METRICS), 3.2)
    axes = fig.subplots(1, len(CURVE_METRICS), squeeze=False)[0]
    for ax, metric in zip(axes, CURVE_METRICS, strict=True):
        part = by_k[by_k["metric"] == metric]
        for model, rows in part.groupby("model", sort=False):
            style = "--" if model in baselines else "-"
            color = colors.get(str(model))
            ax.plot(rows["k"], rows["value"], style, marker="o", ms=3, color=color, label=model)
        ax.set_title(f"{metric} @ k")
        ax.set_xlabel("k")
        ax.set_xticks(list(result.ks))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()  # one legend for the row
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
    return _svg(fig)


def _coverage_plot(result: EvaluationResult) -> str:
    table = result.table.dropna(subset=["coverage", "popularity_bias"])
    colors = _colors(result)
    fig = _new_figure(5.0, 3.6)
    ax = fig.subplots()
    for record in table.itertuples():
        marker = "s" if record.baseline else "o"
        ax.scatter(
            record.coverage, record.popularity_bias, color=colors[record.model], marker=marker
        )
        ax.annotate(
            str(record.model),
            (record.coverage, record.popularity_bias),
            xytext=(4, 3),
            textcoords="offset points",
            fontsize=8,
        )
    ax.set_xlabel(f"catalog coverage @ {result.beyond_k}")
    ax.set_ylabel(f"popularity bias @ {result.beyond_k} (0.5 = neutral)")
    ax.set_xlim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    return _svg(fig)


def _bar_plot(frame: pd.DataFrame, result: EvaluationResult, xlabel: str) -> str:
    """Grouped bars: one group per segment, one bar per model."""
    metric = f"{SEGMENT_METRIC_BASE}@{result.beyond_k}"
    colors = _colors(result)
    segments = list(pd.unique(frame["segment"]))
    models = list(pd.unique(frame["model"]))
    fig = _new_figure(max(5.0, 0.9 * len(segments) + 2.5), 3.4)
    ax = fig.subplots()
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(segments))
    for i, model in enumerate(models):
        rows = frame[frame["model"] == model].set_index("segment").reindex(segments)
        ax.bar(x + i * width, rows[metric].fillna(0.0), width, label=model, color=colors[model])
    labels = [f"{s}\n({int(n)} users)" for s, n in _segment_users(frame, segments)]
    ax.set_xticks(x + width * (len(models) - 1) / 2, labels, fontsize=8)
    ax.set_ylabel(metric)
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside right center", fontsize=8, frameon=False)
    return _svg(fig)


def _segment_users(frame: pd.DataFrame, segments: Sequence[str]) -> list[tuple[str, int]]:
    users = frame.groupby("segment", sort=False)["users"].max()
    return [(s, int(users.get(s, 0))) for s in segments]


def _segment_plot(result: EvaluationResult) -> str:
    seg = result.by_segment
    if seg.empty:
        return ""
    part = seg[seg["dimension"] == "user_activity"]
    return _bar_plot(part, result, "user segment (training interactions)") if len(part) else ""


def _category_plot(result: EvaluationResult) -> str:
    seg = result.by_segment
    if seg.empty or "category" not in set(seg["dimension"]):
        return ""
    return _bar_plot(seg[seg["dimension"] == "category"], result, "category of the test item")


# --------------------------------------------------------------------------- terminal


def print_table(result: EvaluationResult, console: Console | None = None) -> None:
    """The main numbers of every model as a rich table; baselines dimmed."""
    console = console or Console()
    k = result.beyond_k
    columns = {
        f"ndcg@{k}": "NDCG",
        f"recall@{k}": "recall",
        f"precision@{k}": "prec.",
        f"map@{k}": "MAP",
        f"mrr@{k}": "MRR",
        f"hit_rate@{k}": "hit",
        "coverage": "cover.",
        "popularity_bias": "pop.bias",
        "fit_seconds": "fit s",
    }
    table = Table(
        title=f"offline evaluation @ {k}, protocol {result.protocol!r}",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    table.add_column("model", no_wrap=True)
    for header in columns.values():
        table.add_column(header, justify="right", no_wrap=True)
    for record in result.table.to_dict(orient="records"):
        cells = [_short(record.get(c)) for c in columns]
        style = "dim" if record.get("baseline") else None
        table.add_row(str(record["model"]), *cells, style=style)
    console.print(table)
    users = result.split_summary.get("users_evaluated")
    new = result.split_summary.get("new_users_evaluated")
    console.print(f"{users} users evaluated ({new} new in the test period); baselines dimmed")


def _short(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if isinstance(value, float | np.floating) else str(value)
