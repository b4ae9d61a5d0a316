"""Serving: the REST API, model hot swap, real-time online state, API keys.

The request path behind the REST API (`nextbuy.server` assembles the app). How a request is
answered:

- `state.live` (live.py) is one immutable object holding the loaded model version with
  everything precomputed for it (snapshot.py), the catalogue its indices refer to and the
  placement rules. A request reads it once; a model swap, an item change or a rules reload
  builds a new one aside and swaps the reference, so nothing in flight ever fails.
- Who is asking (shopper.py): the trained history row plus the events since the training
  data ended, kept per user and per session in memory (online.py), so an event changes the
  very next answer without retraining.
- Candidates (candidates.py): without new events, the user's top list precomputed at load;
  with them, a pool (that list, partners of what they just did, popular and trending items)
  scored exactly by the model's own fast path (`Recommender.pool_scores`); complements of a
  fresh purchase lead; cold start falls back to page category, onboarding answers,
  trending, popular.
- Rules per placement (nextbuy.rules), then reasons for the final k (explain.py).

Load-time reads and every write go through the store; events, items and users are written
in a thread pool, before the answer.
"""
