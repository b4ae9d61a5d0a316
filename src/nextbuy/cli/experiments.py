"""`nextbuy experiment ...`: A/B tests and bandits from creation to report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from nextbuy.cli.common import ConfigOption, app, console, settings_for, user_errors, with_steps
from nextbuy.errors import NextbuyError

experiment_app = typer.Typer(
    help="A/B tests: create, list, start, pause, stop, status and an HTML report.",
    no_args_is_help=True,
)
app.add_typer(experiment_app, name="experiment")


def _experiments(config: Path | None) -> Any:
    from nextbuy.experiments.registry import ExperimentRegistry
    from nextbuy.store import open_store

    settings = settings_for(config)
    open_store(settings.store_path).close()  # the experiment tables exist from here on
    return settings, ExperimentRegistry(settings.store_path, settings.experiments)


def _variant(spec: str, **flags: bool) -> dict[str, Any]:
    """NAME[:MODEL_VERSION][=WEIGHT] as a variant table."""
    body, _, weight = spec.partition("=")
    name, _, version = body.partition(":")
    variant: dict[str, Any] = {"name": name.strip(), **{k: v for k, v in flags.items() if v}}
    if version.strip():
        variant["model_version"] = version.strip()
    if weight.strip():
        try:
            variant["weight"] = float(weight)
        except ValueError:
            raise NextbuyError(f"variant {spec!r}: weight {weight!r} is not a number") from None
    return variant


def _from_toml(path: Path) -> list[dict[str, Any]]:
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise NextbuyError(f"{path}: {exc}") from None
    found = data.get("experiments", data)
    return found if isinstance(found, list) else [found]


@experiment_app.command("create")
@user_errors
def experiment_create(
    name: Annotated[str | None, typer.Option(help="Experiment name (and default salt)")] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            "--variant", "-v", help="NAME[:MODEL_VERSION][=WEIGHT], e.g. b:v0002 (repeatable)"
        ),
    ] = None,
    holdout: Annotated[
        str | None, typer.Option(help="NAME[=WEIGHT] of a non-personalised holdout arm")
    ] = None,
    shadow: Annotated[
        list[str] | None,
        typer.Option(help="NAME:MODEL_VERSION computed and logged but never shown (repeatable)"),
    ] = None,
    layer: Annotated[str, typer.Option(help="Experiments of one layer never share a user")] = (
        "default"
    ),
    traffic: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of the layer")] = 1.0,
    unit: Annotated[str, typer.Option(help="user, or session for anonymous traffic")] = "user",
    bandit: Annotated[bool, typer.Option(help="Thompson sampling moves traffic")] = False,
    metric: Annotated[str, typer.Option(help="Bandit reward: ctr or conversion")] = "ctr",
    floor: Annotated[float, typer.Option(help="Least share every bandit arm keeps")] = 0.05,
    alpha: float = 0.05,
    mde: Annotated[
        float | None, typer.Option(help="Relative lift the test is powered to detect")
    ] = None,
    from_toml: Annotated[
        Path | None, typer.Option(help="TOML with [[experiments]] tables instead of options")
    ] = None,
    start: Annotated[bool, typer.Option(help="Start at once (else a draft)")] = False,
    config: ConfigOption = None,
) -> None:
    """Create an experiment; a running server picks it up within a second."""
    from nextbuy.experiments.registry import parse_experiment

    _, registry = _experiments(config)
    if from_toml is not None:
        tables = _from_toml(from_toml)
    else:
        if not name or not variant:
            raise NextbuyError("give --name and at least one --variant, or --from-toml FILE")
        variants = [_variant(v) for v in variant]
        if holdout:
            variants.append(_variant(holdout, holdout=True))
        variants += [_variant(s, shadow=True) for s in shadow or []]
        tables = [
            {
                "name": name, "layer": layer, "traffic": traffic, "unit": unit,
                "variants": variants, "allocation": "thompson" if bandit else "fixed",
                "bandit_metric": metric, "exploration_floor": floor, "alpha": alpha,
                "min_detectable_effect": mde,
            }
        ]  # fmt: skip
    for table in tables:
        if start:
            table = {**table, "status": "running"}
        created = registry.create(parse_experiment(table))
        arms = ", ".join(
            f"{v.name}{':' + v.model_version if v.model_version else ''}"
            f"{' (holdout)' if v.holdout else ''}{' (shadow)' if v.shadow else ''}"
            for v in created.variants
        )
        console.print(f"created {created.name} ({created.status}) in layer {created.layer}: {arms}")
        if not start:
            console.print(f"start it with `nextbuy experiment start {created.name}`")


@experiment_app.command("list")
@user_errors
def experiment_list(config: ConfigOption = None) -> None:
    """Every experiment (nextbuy.toml and created ones) with status, layer and split."""
    _, registry = _experiments(config)
    table = Table(title="experiments")
    for column in ("name", "status", "layer", "traffic", "allocation", "variants", "started"):
        table.add_column(column)
    for e in registry.all():
        weights = e.planned_weights()
        arms = ", ".join(
            f"{v.name}{':' + v.model_version if v.model_version else ''}"
            + (" shadow" if v.shadow else f" {weights[v.name]:.0%}")
            + (" holdout" if v.holdout else "")
            for v in e.variants
        )
        started = e.started_at.strftime("%Y-%m-%d %H:%M") if e.started_at else ""
        table.add_row(e.name, e.status, e.layer, f"{e.traffic:.0%}", e.allocation, arms, started)
    console.print(table)


def _change_experiment(name: str, action: Any, config: Path | None) -> None:
    _, registry = _experiments(config)
    changed = registry.change(name, action)
    console.print(f"{changed.name} is now {changed.status}")


@experiment_app.command("start")
@user_errors
def experiment_start(name: str, config: ConfigOption = None) -> None:
    """Start a draft; a running server serves it once the model versions it names load."""
    _change_experiment(name, "start", config)


@experiment_app.command("pause")
@user_errors
def experiment_pause(name: str, config: ConfigOption = None) -> None:
    """Pause: everyone gets the current logic until `resume`."""
    _change_experiment(name, "pause", config)


@experiment_app.command("resume")
@user_errors
def experiment_resume(name: str, config: ConfigOption = None) -> None:
    """Resume a paused experiment."""
    _change_experiment(name, "resume", config)


@experiment_app.command("stop")
@user_errors
def experiment_stop(name: str, config: ConfigOption = None) -> None:
    """Stop for good (its data stays for the report)."""
    _change_experiment(name, "stop", config)


@experiment_app.command("status")
@user_errors
def experiment_status(name: str, config: ConfigOption = None) -> None:
    """Per variant: units, lists, CTR, conversion, revenue per visitor, lift, p-values."""
    from nextbuy.experiments.reporting import results_for

    settings, _ = _experiments(config)
    results = with_steps(lambda step: (step(f"analysing {name}"), results_for(settings, name))[1])
    e = results.experiment
    console.print(f"{e.name}: {e.status}, layer {e.layer}, allocation {e.allocation}")
    wide = results.summary()
    table = Table(title=f"{e.name} (control: {e.control})")
    for column in ("variant", "units", "lists", "CTR", "conversion", "rev/visitor", "CTR lift",
                   "p", "always-valid p"):  # fmt: skip
        table.add_column(column)
    for r in wide.to_dict(orient="records"):
        lift = r.get("ctr_lift")
        has_lift = lift is not None and lift == lift
        table.add_row(
            r["variant"], f"{r['units']:,.0f}", f"{r['impressions']:,.0f}", f"{r['ctr']:.4f}",
            f"{r['conversion']:.2%}", f"{r['revenue_per_visitor']:.2f}",
            f"{lift:+.1%} [{r['ctr_lift_ci_low']:+.1%}, {r['ctr_lift_ci_high']:+.1%}]"
            if has_lift else "control",
            f"{r['ctr_p_value']:.3g}" if has_lift else "",
            f"{r['ctr_p_value_always_valid']:.3g}" if has_lift else "",
        )  # fmt: skip
    console.print(table)
    for note in results.notes:
        if not note.startswith("Significance is judged"):  # the method: see the report
            console.print(note, soft_wrap=True)
    console.print("significance: always-valid p-values (mSPRT); details in the report")


@experiment_app.command("report")
@user_errors
def experiment_report(
    name: str,
    out: Annotated[Path | None, typer.Option(help="HTML file (JSON beside it)")] = None,
    config: ConfigOption = None,
) -> None:
    """HTML report: verdict, lift over time with its band, traffic split, segments."""
    from nextbuy.experiments.report import write_report
    from nextbuy.experiments.reporting import results_for

    settings, _ = _experiments(config)
    results = with_steps(lambda step: (step(f"analysing {name}"), results_for(settings, name))[1])
    html, data = write_report(results, out or Path(f"experiment-{name}.html"))
    console.print(f"wrote {html} and {data}")
