"""The read side of the exposure log: served lists, and the clicks, carts and purchases that
followed them.

Attribution, the bandit's counts, experiment reports, position-bias fits and the simulator's
planted truth all read the same few joins of served lists with events. What those rows mean
(which outcome goes to which list, what a lift is) belongs to ``nextbuy.experiments``; how
they are read belongs here, behind ``OutcomeReader``, so another backend implements the same
methods and no analysis holds SQL. Every method returns plain frames (or dicts) with the
columns its docstring names, and reads a consistent snapshot while writers keep appending.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd

# What served lists can be grouped by in `served_performance`; every backend offers these.
SERVED_GROUPS = ("placement", "route", "model_version", "position", "day", "hour")


@dataclass(frozen=True)
class ExperimentOutcomes:
    """One experiment's shown lists and the events that may be attributed to them, read
    together so the three agree.

    ``lists``: recommendation_id, variant, unit_id, user_id, served_at, placement.
    ``direct``: recommendation_id, variant, unit_id, event_key, event_type, ts, value,
    order_id, item_id (clicks, add-to-carts and purchases sent with a shown list's id).
    ``view_through``: recommendation_id, variant, unit_id, event_key, ts, value, order_id,
    item_id, served_at: every shown list a purchase without such an id may go to.
    """

    lists: pd.DataFrame
    direct: pd.DataFrame
    view_through: pd.DataFrame


@dataclass(frozen=True)
class ShadowLists:
    """What a shadow comparison needs, read together; all empty but ``lists`` when the
    experiment has no shadow list.

    ``lists``: recommendation_id, shadow_of, variant, user_id, served_at of each shadow list.
    ``shown``: recommendation_id, variant, user_id, served_at of the shown lists shadowed.
    ``items``: recommendation_id, item_id of every list of the experiment.
    ``acted``: user_id, item_id, event_type, ts of the clicks and purchases of users who
    were served a shadow list.
    """

    lists: pd.DataFrame
    shown: pd.DataFrame
    items: pd.DataFrame
    acted: pd.DataFrame


class OutcomeReader(Protocol):
    def experiment_outcomes(self, experiment: str, window_ms: int) -> ExperimentOutcomes:
        """Shown lists of ``experiment``, their direct outcomes, and the candidate lists of
        each purchase of a shown item by the same user at most ``window_ms`` after the list
        was served, without the id of one of the experiment's shown lists (none when
        ``window_ms`` <= 0)."""
        ...

    def bandit_counts(
        self, experiment: str, outcome_type: str
    ) -> tuple[dict[str, float], dict[str, float]]:
        """(successes, trials) per variant: trials are shown lists, successes shown lists
        followed by at least one ``outcome_type`` event sent with their id."""
        ...

    def first_events_of(self, experiment: str) -> pd.DataFrame:
        """user_id, first_event (ts of the user's earliest event) of every user served a
        list under ``experiment``."""
        ...

    def user_attributes_of(self, experiment: str) -> pd.DataFrame:
        """user_id, attributes (JSON text or None) of every stored user served a list under
        ``experiment``."""
        ...

    def shadow_lists(self, experiment: str) -> ShadowLists: ...

    def click_logs(
        self, since_ms: int | None, experiment: str | None, shuffled: bool | None
    ) -> pd.DataFrame:
        """One row per item of a shown list: recommendation_id, user_id, placement, variant
        (None unless ``experiment`` is named; then only its lists), shuffled, item_id,
        position, clicked (1 when a click on the item was sent with the list's id). Lists
        served from ``since_ms`` on; ``shuffled`` keeps only lists in random (True) or ranked
        (False) order."""
        ...

    def served_performance(
        self, by: Sequence[str], since_ms: int | None, until_ms: int | None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(shown, outcomes) of the shown lists served in [since_ms, until_ms), grouped by
        ``by`` (names from ``SERVED_GROUPS``, one column each): shown has impressions (list
        items) and lists; outcomes has clicks, add_to_carts, purchases and revenue of the
        events sent with a list's id on one of its items. No grouping: one row each."""
        ...

    def logged_positions(self, experiment: str) -> pd.DataFrame:
        """variant, recommendation_id, user_id, item_id, position of every item of the
        experiment's shown lists."""
        ...


def open_outcome_reader(path: Path) -> OutcomeReader:
    return _SQLiteOutcomeReader(path)


LISTS_SQL = """
SELECT a.recommendation_id, a.variant, a.unit_id, a.user_id, a.served_at, x.placement
FROM exposure_arms a JOIN exposures x ON x.recommendation_id = a.recommendation_id
WHERE a.experiment = ? AND a.shown = 1
"""
DIRECT_SQL = """
SELECT a.recommendation_id, a.variant, a.unit_id, e.event_key, e.event_type, e.ts, e.value,
       e.order_id, e.item_id
FROM exposure_arms a JOIN events e ON e.recommendation_id = a.recommendation_id
WHERE a.experiment = ? AND a.shown = 1 AND e.event_type IN ('click', 'add_to_cart', 'purchase')
"""
VIEW_THROUGH_SQL = """
SELECT a.recommendation_id, a.variant, a.unit_id, e.event_key, e.ts, e.value, e.order_id,
       e.item_id, a.served_at
FROM events e
JOIN exposure_items i ON i.user_id = e.user_id AND i.item_id = e.item_id
JOIN exposure_arms a ON a.experiment = ? AND a.recommendation_id = i.recommendation_id
WHERE e.event_type = 'purchase' AND e.user_id IS NOT NULL AND a.shown = 1
  AND e.ts >= a.served_at AND e.ts <= a.served_at + ?
  AND (e.recommendation_id IS NULL OR e.recommendation_id NOT IN
       (SELECT recommendation_id FROM exposure_arms WHERE experiment = ? AND shown = 1))
"""
VIEW_THROUGH_COLUMNS = ["recommendation_id", "variant", "unit_id", "event_key", "ts", "value",
                        "order_id", "item_id", "served_at"]  # fmt: skip
TRIALS_SQL = """
SELECT variant, COUNT(*) FROM exposure_arms WHERE experiment = ? AND shown = 1 GROUP BY variant
"""
# Per list, not per event: a list clicked twice is one success, so successes <= trials.
SUCCESSES_SQL = """
SELECT a.variant, COUNT(DISTINCT a.recommendation_id) FROM exposure_arms a
JOIN events e ON e.recommendation_id = a.recommendation_id
WHERE a.experiment = ? AND a.shown = 1 AND e.event_type = ? GROUP BY a.variant
"""
FIRST_EVENTS_SQL = """
SELECT e.user_id, MIN(e.ts) AS first_event FROM events e WHERE e.user_id IN
(SELECT DISTINCT user_id FROM exposure_arms WHERE experiment = ?) GROUP BY e.user_id
"""
USER_ATTRIBUTES_SQL = """
SELECT user_id, attributes FROM users WHERE user_id IN
(SELECT DISTINCT user_id FROM exposure_arms WHERE experiment = ?)
"""
SHADOW_SQL = """
SELECT x.recommendation_id, x.shadow_of, a.variant, x.user_id, x.served_at
FROM exposure_arms a JOIN exposures x ON x.recommendation_id = a.recommendation_id
WHERE a.experiment = ? AND a.shown = 0
"""
SHADOWED_SQL = """
SELECT x.recommendation_id, a.variant, x.user_id, x.served_at FROM exposures x
JOIN exposure_arms a ON a.recommendation_id = x.recommendation_id AND a.experiment = ?
WHERE x.recommendation_id IN
(SELECT x2.shadow_of FROM exposure_arms a2 JOIN exposures x2
 ON x2.recommendation_id = a2.recommendation_id WHERE a2.experiment = ? AND a2.shown = 0)
"""
EXPERIMENT_ITEMS_SQL = """
SELECT i.recommendation_id, i.item_id FROM exposure_items i WHERE i.recommendation_id IN
(SELECT recommendation_id FROM exposure_arms WHERE experiment = ?)
"""
SHADOW_USERS_ACTED_SQL = """
SELECT user_id, item_id, event_type, ts FROM events WHERE event_type IN ('click', 'purchase')
AND user_id IN (SELECT DISTINCT user_id FROM exposure_arms WHERE experiment = ? AND shown = 0)
"""
LOGGED_POSITIONS_SQL = """
SELECT a.variant, a.recommendation_id, i.user_id, i.item_id, i.position
FROM exposure_arms a JOIN exposure_items i ON i.recommendation_id = a.recommendation_id
WHERE a.experiment = ? AND a.shown = 1
"""
# served_performance: the SQL of each name in SERVED_GROUPS
GROUP_SQL = {
    "placement": "x.placement",
    "route": "x.route",
    "model_version": "x.model_version",
    "position": "i.position",
    "day": "date(x.served_at / 1000, 'unixepoch')",
    "hour": "strftime('%Y-%m-%d %H:00', x.served_at / 1000, 'unixepoch')",
}
SHOWN_COUNTS = "COUNT(*) AS impressions, COUNT(DISTINCT x.recommendation_id) AS lists"
SHOWN_FROM = "FROM exposures x JOIN exposure_items i ON i.recommendation_id = x.recommendation_id"
OUTCOME_COUNTS = (
    "SUM(e.event_type = 'click') AS clicks, SUM(e.event_type = 'add_to_cart') AS add_to_carts, "
    "SUM(e.event_type = 'purchase') AS purchases, "
    "SUM(CASE WHEN e.event_type = 'purchase' THEN COALESCE(e.value, 0) ELSE 0 END) AS revenue"
)
OUTCOME_FROM = (
    "FROM events e JOIN exposure_items i ON i.recommendation_id = e.recommendation_id "
    "AND i.item_id = e.item_id JOIN exposures x ON x.recommendation_id = i.recommendation_id "
    "WHERE e.event_type IN ('click', 'add_to_cart', 'purchase') AND"
)


def _query(conn: sqlite3.Connection, sql: str, params: Sequence[object] = ()) -> pd.DataFrame:
    cursor = conn.execute(sql, tuple(params))
    names = [d[0] for d in cursor.description]
    return pd.DataFrame.from_records(cursor.fetchall(), columns=names)


class _SQLiteOutcomeReader:
    """Reads the store's SQLite file, a connection per call: each call is one snapshot
    while the server's writer keeps appending."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as conn:
            yield conn

    def _read(self, sql: str, params: Sequence[object] = ()) -> pd.DataFrame:
        with self._connect() as conn:
            return _query(conn, sql, params)

    def experiment_outcomes(self, experiment: str, window_ms: int) -> ExperimentOutcomes:
        with self._connect() as conn:
            lists = _query(conn, LISTS_SQL, (experiment,))
            direct = _query(conn, DIRECT_SQL, (experiment,))
            late = (
                _query(conn, VIEW_THROUGH_SQL, (experiment, window_ms, experiment))
                if window_ms > 0
                else pd.DataFrame(columns=VIEW_THROUGH_COLUMNS)
            )
        return ExperimentOutcomes(lists, direct, late)

    def bandit_counts(
        self, experiment: str, outcome_type: str
    ) -> tuple[dict[str, float], dict[str, float]]:
        with self._connect() as conn:
            trials = dict(conn.execute(TRIALS_SQL, (experiment,)).fetchall())
            successes = dict(conn.execute(SUCCESSES_SQL, (experiment, outcome_type)).fetchall())
        return (
            {k: float(v) for k, v in successes.items()},
            {k: float(v) for k, v in trials.items()},
        )

    def first_events_of(self, experiment: str) -> pd.DataFrame:
        return self._read(FIRST_EVENTS_SQL, (experiment,))

    def user_attributes_of(self, experiment: str) -> pd.DataFrame:
        return self._read(USER_ATTRIBUTES_SQL, (experiment,))

    def shadow_lists(self, experiment: str) -> ShadowLists:
        with self._connect() as conn:
            lists = _query(conn, SHADOW_SQL, (experiment,))
            if lists.empty:
                return ShadowLists(
                    lists,
                    pd.DataFrame(columns=["recommendation_id", "variant", "user_id", "served_at"]),
                    pd.DataFrame(columns=["recommendation_id", "item_id"]),
                    pd.DataFrame(columns=["user_id", "item_id", "event_type", "ts"]),
                )
            return ShadowLists(
                lists,
                _query(conn, SHADOWED_SQL, (experiment, experiment)),
                _query(conn, EXPERIMENT_ITEMS_SQL, (experiment,)),
                _query(conn, SHADOW_USERS_ACTED_SQL, (experiment,)),
            )

    def click_logs(
        self, since_ms: int | None, experiment: str | None, shuffled: bool | None
    ) -> pd.DataFrame:
        where: list[str] = ["x.shown = 1"]
        params: list[object] = []
        join = ""
        variant = "NULL AS variant"
        if experiment is not None:
            join = "JOIN exposure_arms a ON a.recommendation_id = x.recommendation_id "
            where.append("a.experiment = ?")
            params.append(experiment)
            variant = "a.variant"
        if since_ms is not None:
            where.append("x.served_at >= ?")
            params.append(since_ms)
        if shuffled is not None:
            # a literal (an int, so safe), not a parameter: SQLite plans it differently,
            # and callers have always seen the rows in that plan's order
            where.append(f"x.shuffled = {int(shuffled)}")
        sql = (
            f"SELECT i.recommendation_id, i.user_id, x.placement, {variant}, x.shuffled, "
            "i.item_id, i.position, EXISTS (SELECT 1 FROM events e WHERE "
            "e.recommendation_id = i.recommendation_id AND e.item_id = i.item_id "
            "AND e.event_type = 'click') AS clicked "
            f"FROM exposures x {join}JOIN exposure_items i "
            f"ON i.recommendation_id = x.recommendation_id WHERE {' AND '.join(where)}"
        )
        return self._read(sql, params)

    def served_performance(
        self, by: Sequence[str], since_ms: int | None, until_ms: int | None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        unknown = [b for b in by if b not in GROUP_SQL]
        if unknown:
            # the names go into the SQL text: only known ones may
            raise ValueError(f"unknown grouping {unknown}; choose from {SERVED_GROUPS}")
        where: list[str] = ["x.shown = 1"]
        params: list[object] = []
        for bound, op in ((since_ms, ">="), (until_ms, "<")):
            if bound is not None:
                where.append(f"x.served_at {op} ?")
                params.append(bound)
        select = "".join(f"{GROUP_SQL[b]} AS {b}, " for b in by)
        group = f"GROUP BY {', '.join(str(i + 1) for i in range(len(by)))}" if by else ""
        condition = " AND ".join(where)
        shown_sql = f"SELECT {select}{SHOWN_COUNTS} {SHOWN_FROM} WHERE {condition} {group}"
        outcome_sql = f"SELECT {select}{OUTCOME_COUNTS} {OUTCOME_FROM} {condition} {group}"
        with self._connect() as conn:
            return _query(conn, shown_sql, params), _query(conn, outcome_sql, params)

    def logged_positions(self, experiment: str) -> pd.DataFrame:
        return self._read(LOGGED_POSITIONS_SQL, (experiment,))
