"""`nextbuy evaluate`: the offline table and HTML report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from nextbuy.cli.common import (
    ConfigOption,
    app,
    console,
    positive_events,
    settings_for,
    user_errors,
    with_steps,
)
from nextbuy.config import Settings

DEFAULT_EVALUATED_MODELS = ("ease", "als", "bpr", "itemknn", "trending")
PROTOCOLS = ("discovery", "repeat")


@app.command()
@user_errors
def evaluate(
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Models to compare (repeatable)")
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            help="discovery (bought items excluded), repeat, or standard; default: both "
            "discovery and repeat, the one the served lists follow first"
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Compare models on a temporal split next to random and popularity; writes an HTML report."""
    evaluate_and_report(settings_for(config), protocol, model)


def evaluate_and_report(settings: Settings, protocol: str | None, models: list[str] | None) -> None:
    from nextbuy.evaluation.report import print_table, write_report
    from nextbuy.store.registry import ModelRegistry

    serving = ModelRegistry(settings.models_dir).serving()
    meta = None if serving is None else serving.meta
    in_force = "discovery" if settings.training.excludes_seen(meta) else "repeat"
    protocols = [protocol] if protocol else [in_force, *(p for p in PROTOCOLS if p != in_force)]
    results = with_steps(lambda step: _run_evaluation(settings, meta, protocols, models, step))
    if serving is not None:
        console.print(f"served: {serving.name}, {meta['model']}, with its decay and event weights")
    for result in results:
        console.rule(f"{result.protocol} protocol")
        print_table(result, console)
    reports = settings.data_dir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    html, data = reports / "evaluation.html", reports / "evaluation.json"
    first = results[0]
    write_report(
        first,
        html,
        data,
        title=f"nextbuy evaluation ({first.protocol} protocol)",
        others=results[1:],
        choice=None if meta is None else meta.get("choice"),
    )
    console.print(f"report: {html.resolve()}\nevery number: {data.resolve()}")


def _run_evaluation(
    settings: Settings,
    meta: dict[str, Any] | None,
    protocols: list[str],
    models: list[str] | None,
    step: Callable[[str], None],
) -> list[Any]:
    """The served configuration (its model, decay and event weights) beside the usual
    families, fitted on the first 80% of the dated events and scored on the rest, under
    each protocol."""
    from nextbuy.engine import model_params
    from nextbuy.evaluation.runner import evaluate_protocols
    from nextbuy.evaluation.splits import temporal_split
    from nextbuy.models import create_model

    step("reading events")
    positive, items = positive_events(settings)
    split = temporal_split(positive, test_fraction=0.2)
    from nextbuy.config import AUTO_MODEL

    served = _served_model(settings, meta)
    configured = [] if settings.training.model == AUTO_MODEL else [settings.training.model]
    names = list(models or dict.fromkeys([*configured, *DEFAULT_EVALUATED_MODELS]))
    chosen = {name: create_model(name, **model_params(settings, name)) for name in names}
    if served is not None and not models:
        chosen = {served[0]: served[1], **{n: m for n, m in chosen.items() if n != served[0]}}
    weights, half_life = settings.events.all_weights(), settings.training.half_life_days
    if meta is not None:
        weights, half_life = meta.get("weights") or weights, meta.get("half_life_days")
    step(f"fitting and scoring {len(chosen)} models and the baselines")
    return evaluate_protocols(
        split,
        chosen,
        protocols=protocols,
        items=items,
        weights=weights,
        half_life_days=half_life,
    )


def _served_model(settings: Settings, meta: dict[str, Any] | None) -> tuple[str, Any] | None:
    """(name, an unfitted copy of the model in service), if one is."""
    from nextbuy.models import create_model

    if meta is None:
        return None
    params = dict(meta.get("params") or {})
    return str(meta["model"]), create_model(str(meta["model"]), **params)
