"""Plain-words reasons: the strongest signal behind each recommended item.

The ranker's SHAP values (LightGBM `pred_contrib=True`) say how much each feature pushed an
item up for this user. Features that are the same for all of a user's candidates (the user's
own RFM numbers, the request context) cannot say why *this* item, so they are skipped; the
feature with the largest positive contribution among the rest names the signal, and the
signal's template turns it into words: "Because you bought WHITE METAL LANTERN",
"Popular in CANDLE", "You buy this regularly".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from nextbuy.hybrid.features import CONTEXT_FEATURES, USER_FEATURES


@dataclass(frozen=True)
class Reason:
    """Why one item was recommended."""

    signal: str  # generator or feature group: "recent", "content", "trending", "buy_again", ...
    feature: str  # the ranker feature with the strongest positive contribution
    contribution: float  # its SHAP value (raw ranker score units)
    text: str  # the reason in plain words

    def to_dict(self) -> dict[str, object]:
        return {
            "signal": self.signal,
            "feature": self.feature,
            "contribution": round(self.contribution, 4),
            "text": self.text,
        }


@dataclass(frozen=True)
class ItemFacts:
    """What a template may mention about one candidate."""

    title: str
    category: str
    brand: str
    anchor_title: str | None  # the history item most similar to it, for "because you bought"
    times_bought: float  # baskets of the user with this item


Template = Callable[[ItemFacts], str]


def _because(facts: ItemFacts) -> str:
    if facts.anchor_title:
        return f"Because you bought {facts.anchor_title}"
    return "Goes with what you bought recently"


def _category(prefix: str, fallback: str) -> Template:
    return lambda f: f"{prefix} {f.category}" if f.category else fallback


def _again(facts: ItemFacts) -> str:
    if facts.times_bought >= 2:
        return f"You buy this regularly ({int(facts.times_bought)} times so far)"
    return "You bought this before"


# feature prefix → (signal, template); the first matching prefix wins, so order matters
SIGNALS: tuple[tuple[str, str, Template], ...] = (
    ("recent_", "recent", _because),
    ("itemknn_", "itemknn", _because),
    ("als_", "als", lambda f: "Customers who shop like you bought it"),
    ("ease_", "ease", lambda f: "Often bought by customers who buy what you buy"),
    ("content_", "content", _category("Matches your taste for", "Similar to what you like")),
    ("category_share", "category", _category("You often buy", "Close to what you often buy")),
    ("category_days_since", "category", _category("Back to", "Close to what you often buy")),
    ("category_users", "category", _category("Popular in", "A best seller")),
    ("category_", "category", _category("Popular in", "A best seller")),
    ("brand_share", "brand", lambda f: f"You like {f.brand}" if f.brand else "A brand you like"),
    ("buy_again_", "buy_again", _again),
    ("ui_", "buy_again", _again),
    ("trending_", "trending", lambda f: "Trending this week"),
    ("item_users_7d", "trending", lambda f: "Trending this week"),
    ("item_users_30d", "trending", lambda f: "Popular this month"),
    ("item_trend", "trending", lambda f: "Selling more and more lately"),
    ("item_days_since_sold", "trending", lambda f: "Selling right now"),
    ("item_users", "popularity", lambda f: "One of our best sellers"),
    ("item_repeat_rate", "popularity", lambda f: "Customers buy it again and again"),
    ("item_age_days", "new", lambda f: "New in the shop"),
    ("price_vs_user", "price", lambda f: "In your usual price range"),
    ("price", "price", lambda f: "At a price that suits you"),
    ("log_price", "price", lambda f: "At a price that suits you"),
    ("n_sources", "several", lambda f: "Recommended by several of our signals"),
)
UNEXPLAINING = frozenset(USER_FEATURES) | frozenset(CONTEXT_FEATURES)


@lru_cache(maxsize=256)
def signal_of(feature: str) -> tuple[str, Template]:
    """The signal and template a feature belongs to."""
    for prefix, signal, template in SIGNALS:
        if feature.startswith(prefix):
            return signal, template
    return "several", lambda f: "Picked for you"


@lru_cache(maxsize=8)
def _signal_groups(names: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    """The explaining signals among these features, and which feature belongs to which
    (signals × features, 0/1); the same for every request of one ranker, so cached."""
    signal_names = [signal_of(n)[0] for n in names]
    groups = sorted({s for s, n in zip(signal_names, names, strict=True) if n not in UNEXPLAINING})
    member = np.array(
        [
            [s == g and n not in UNEXPLAINING for s, n in zip(signal_names, names, strict=True)]
            for g in groups
        ],
        dtype=np.float64,
    )
    member.setflags(write=False)
    return groups, member


def reasons(
    contributions: np.ndarray,
    feature_names: Sequence[str],
    facts: Sequence[ItemFacts],
    origins: Sequence[str],
) -> list[Reason]:
    """One reason per row of SHAP values.

    A signal's push is the sum of its features' contributions (a generator's score and rank
    together, say); the strongest positive signal wins and its largest feature is named.
    When nothing item-specific pushed the item up, or only "several generators agree" did,
    the generator that ranked the candidate highest (`origins`) names the reason.
    """
    names = list(feature_names)
    groups, member = _signal_groups(tuple(names))
    rows = contributions.shape[0]
    pushes = contributions @ member.T  # rows × signals
    best = np.argmax(pushes, axis=1) if len(groups) else np.full(rows, -1)
    strongest = pushes[np.arange(rows), best] if len(groups) else np.zeros(rows)
    # per row, its strongest signal's largest feature
    within = np.where(member[best] > 0, contributions, -np.inf) if len(groups) else contributions
    largest = np.argmax(within, axis=1).tolist()
    out = []
    for row, (b, push) in enumerate(zip(best.tolist(), strongest.tolist(), strict=True)):
        if b < 0 or push <= 0 or groups[b] == "several":
            feature = f"{origins[row]}_rank"
            value = float(contributions[row, names.index(feature)]) if feature in names else 0.0
        else:
            feature = names[largest[row]]
            value = float(push)
        signal, template = signal_of(feature)
        out.append(Reason(signal, feature, value, template(facts[row])))
    return out
