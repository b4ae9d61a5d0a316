"""Content, cold start and the hybrid learning-to-rank pipeline.

Candidate generators (`candidates`) → leakage-safe features (`features`) → LightGBM
LambdaMART (`ranker`) → business objective (`objective`) → reasons (`explain`), put together
by `HybridRecommender` (`pipeline`) and measured by `evaluate`.
"""

from nextbuy.hybrid.candidates import CandidateSet, GeneratorSpec, merge
from nextbuy.hybrid.config import HybridConfig, default_generators
from nextbuy.hybrid.features import FeatureBuilder, LeakageError, RankingContext, prepare_events
from nextbuy.hybrid.objective import ValueObjective
from nextbuy.hybrid.pipeline import HybridRecommender
from nextbuy.hybrid.ranker import Ranker

__all__ = [
    "CandidateSet",
    "FeatureBuilder",
    "GeneratorSpec",
    "HybridConfig",
    "HybridRecommender",
    "LeakageError",
    "Ranker",
    "RankingContext",
    "ValueObjective",
    "default_generators",
    "merge",
    "prepare_events",
]
