"""The automatic choice of model: what `nextbuy train` serves when no model is pinned.

```python
from nextbuy.choice import choose
choice = choose(events, items, settings, budget="5m")
choice.winner.candidate        # model, parameters, decay, event weights, rating values
choice.leaderboard()           # every trial, best first, on the protocol in force
```
"""

from nextbuy.choice.candidate import Candidate
from nextbuy.choice.search import choose, decide_protocol, holdout
from nextbuy.choice.shape import DataShape, measure_shape
from nextbuy.choice.trials import Trial
from nextbuy.choice.verdict import Choice

__all__ = [
    "Candidate",
    "Choice",
    "DataShape",
    "Trial",
    "choose",
    "decide_protocol",
    "holdout",
    "measure_shape",
]
