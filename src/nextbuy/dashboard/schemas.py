"""Response models of the /v1/dashboard JSON endpoints (what /docs shows a BI tool)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Dataset(BaseModel):
    label: str
    data: list[float | list[float | None] | None] = Field(
        description="One value per label; [low, high] pairs for interval bands."
    )
    type: str | None = Field(None, description="Drawn as this chart type (mixed charts).")


class Chart(BaseModel):
    """Chart data: one label per x position, one dataset per series."""

    labels: list[str]
    datasets: list[Dataset]
    note: str | None = None


class FigureStatus(BaseModel):
    computed_at: float | None = Field(description="Unix time the figure was last computed.")
    seconds: float = Field(description="How long that computation took.")
    error: str | None = None


# -- overview ----------------------------------------------------------------------------------
class ModelInService(BaseModel):
    version: str | None
    model: str | None
    trained_at: str | None
    loaded_at: str | None
    registry_serving: str | None
    last_load_error: str | None


class RequestTotals(BaseModel):
    since: str = Field(description="Server start: the request figures count from here.")
    requests: int
    server_errors: int
    client_errors: int
    error_rate: float | None = Field(description="Share of requests answered 5xx.")
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class RouteRow(BaseModel):
    route: str
    requests: int
    server_errors: int
    client_errors: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class EventTypeRow(BaseModel):
    event_type: str
    events: int
    attributed: int = Field(description="Events naming the recommendation they followed.")
    revenue: float = Field(description="Sum of purchase values.")
    last_event: str | None
    via_api_since_start: int


class Overview(BaseModel):
    generated_at: str
    model: ModelInService
    requests: RequestTotals
    traffic: Chart = Field(description="Requests per minute and 5xx per minute, per interval.")
    latency: Chart = Field(description="p50/p95/p99 in ms per interval.")
    routes: list[RouteRow]
    event_types: list[EventTypeRow]
    events_per_day: Chart = Field(description="Events per type on the latest days with events.")
    figures: dict[str, FigureStatus]


# -- model quality -----------------------------------------------------------------------------
class VersionRow(BaseModel):
    version: str
    model: str | None
    trained_at: str | None
    events: int | None
    serving: bool
    metrics: dict[str, float | None]


class EvaluationModel(BaseModel):
    model: str | None
    baseline: bool
    metrics: dict[str, float | None]


class EvaluationSummary(BaseModel):
    protocol: str | None
    path: str
    models: list[EvaluationModel]


class LeaderboardRow(BaseModel):
    rank: int
    model: str = Field(description="The candidate: model and the parameters that set it apart.")
    matrix: str = Field(description="Time decay, event weights and rating values it learnt on.")
    stage: str = Field(description="Where in the search it was tried.")
    baseline: bool
    chosen: bool
    ndcg: float | None = Field(description="Validation NDCG@10 under the protocol in force.")
    other_ndcg: float | None = Field(description="Validation NDCG@10 under the other protocol.")
    recall: float | None
    coverage: float | None
    fit_seconds: float | None


class ChoiceSummary(BaseModel):
    version: str
    verdict: str = Field(description="What is served and what it beat, in one line.")
    protocol: str
    other_protocol: str | None
    lists: str = Field(description="Whether lists may repeat purchases, and why.")
    validation: str = Field(description="What was held out to choose on, and why.")
    notes: list[str]
    candidates: int
    seconds: float
    budget_seconds: float
    rows: list[LeaderboardRow]


class BeyondAccuracy(BaseModel):
    users: int = Field(description="Customers whose top list was measured.")
    k: int | None = None
    grouping: str = Field(description="category, or price band without categories")
    catalog_coverage: float | None = None
    diversity: float | None = Field(
        None, description="Share of item pairs in a list from different groups."
    )
    popularity_bias: float | None = Field(
        None, description="Mean popularity percentile of recommended items (0.5 neutral)."
    )
    novelty: float | None = None


class ColdStart(BaseModel):
    personal_requests: int = Field(description="Requests to the for-you routes since start.")
    fallbacks: dict[str, int]
    share: float | None = Field(description="Share answered by a cold-start fallback.")


class Drift(BaseModel):
    grouping: str
    recommended_from: str
    recommended_items: int
    purchases: int
    purchases_since: str | None
    groups: list[str]
    recommended_share: list[float]
    purchased_share: list[float]
    total_variation: float | None = Field(
        description="Half the summed share differences: 0 same mix, 1 disjoint."
    )


class Quality(BaseModel):
    generated_at: str
    serving_version: str | None
    versions: list[VersionRow]
    history: Chart = Field(description="Validation metrics of every version, in order.")
    evaluation: EvaluationSummary | None
    choice: ChoiceSummary | None = Field(
        None, description="How `nextbuy train` chose the version in service."
    )
    beyond: BeyondAccuracy | None
    cold_start: ColdStart
    cold_start_chart: Chart
    drift: Drift | None
    drift_chart: Chart
    figures: dict[str, FigureStatus]


# -- data --------------------------------------------------------------------------------------
class Freshness(BaseModel):
    event_type: str
    last_event: str | None
    age_seconds: float | None
    events: int


class Gaps(BaseModel):
    first_day: str | None
    last_day: str | None
    days_in_range: int
    days_without_events: int
    longest_gap_days: int
    gap_ranges: list[list[str]]


class ImportRow(BaseModel):
    import_id: int
    kind: str
    source: str
    finished_at: str | None
    rows: int
    stored: int
    duplicates: int
    rejected: int


class Data(BaseModel):
    generated_at: str
    events: int = Field(description="Dated events covered by the aggregate.")
    undated_events: int
    freshness: list[Freshness]
    freshness_chart: Chart = Field(description="Hours since the last event of each type.")
    gaps: Gaps
    events_over_time: Chart
    audit: dict[str, Any] | None = Field(description="`nextbuy stats --json`, as last computed.")
    audit_computed_at: str | None
    imports: list[ImportRow]
    figures: dict[str, FigureStatus]


# -- business impact ---------------------------------------------------------------------------
class ImpactRow(BaseModel):
    """Item impressions of shown lists and what followed them directly."""

    impressions: float
    lists: float
    clicks: float
    add_to_carts: float
    purchases: float
    revenue: float
    ctr: float | None
    add_to_cart_rate: float | None
    purchase_rate: float | None
    revenue_per_impression: float | None
    rpm: float | None = Field(description="Revenue per thousand impressions.")
    placement: str | None = None
    position: int | None = None
    day: str | None = None


class Business(BaseModel):
    generated_at: str
    window_days: int | None
    since: str | None
    totals: ImpactRow | None
    by_placement: list[ImpactRow]
    by_position: list[ImpactRow]
    by_placement_position: list[ImpactRow]
    rates_by_placement: Chart
    rpm_by_placement: Chart
    rates_by_position: Chart
    rpm_by_position: Chart
    over_time: Chart
    revenue_over_time: Chart
    figures: dict[str, FigureStatus]


# -- experiments -------------------------------------------------------------------------------
class VariantConfigView(BaseModel):
    name: str
    weight: float | None
    model_version: str | None
    holdout: bool
    shadow: bool


class ExperimentView(BaseModel):
    name: str
    status: str | None
    layer: str | None
    allocation: str | None
    control: str | None
    units: int
    configured_variants: list[VariantConfigView]
    variants: list[dict[str, Any]] = Field(
        description="Per variant: counts, every metric with its interval, lift, p-values."
    )
    metrics: list[dict[str, Any]]
    srm: dict[str, Any] | None
    power: dict[str, Any] | None
    notes: list[str]
    intervals: dict[str, Chart]
    traffic_chart: Chart
    allocation_chart: Chart
    lift_chart: Chart


class Experiments(BaseModel):
    generated_at: str
    experiments: list[ExperimentView]
    figures: dict[str, FigureStatus]


# -- explore -----------------------------------------------------------------------------------
class RecItem(BaseModel):
    item_id: str
    score: float | None
    title: str | None
    reason: str | None
    position: int


class RecList(BaseModel):
    placement: str
    route: str
    items: list[RecItem]


class ItemInfo(BaseModel):
    item_id: str
    title: str | None
    category: str | None
    price: float | None


class WeightedItem(ItemInfo):
    weight: float


class PurchasedItem(ItemInfo):
    times: int
    last: str | None


class RecentEvent(BaseModel):
    item_id: str
    title: str | None = None
    event_type: str
    at: str | None


class UserView(BaseModel):
    user_id: str
    known: bool = Field(description="The customer is in the serving model's training data.")
    consent: bool
    history: list[WeightedItem] = Field(description="Strongest items of the trained history.")
    purchases: list[PurchasedItem]
    since_training: list[RecentEvent]
    placements: list[RecList]


class ItemDetail(ItemInfo):
    available: bool
    popularity_rank: int
    in_model: bool


class ItemView(BaseModel):
    item: ItemDetail
    lists: list[RecList]


class UserSuggestion(BaseModel):
    user_id: str
    items: int


class Suggestions(BaseModel):
    users: list[UserSuggestion]
    items: list[ItemInfo]


class Refreshed(BaseModel):
    figures: dict[str, FigureStatus]
