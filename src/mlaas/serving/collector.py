"""The garbage collector of a model server, set for answering requests.

After start-up a server holds millions of long-lived objects (torch, MLflow, pandas, BentoML,
the model). CPython's collector walks all of them in each full collection, and with its default
thresholds (700 allocations for the young generation) one comes every few hundred requests: a
pause of 100-300 ms for the requests in flight. It was most of /predict's p99 at 64 connections
(310 ms, against a p50 of 40 ms; with this, 50 ms: the note of issue 15). So, once the service
has started:

- `gc.freeze()`: what start-up made moves to a permanent generation that collections skip.
  Reference counting still frees any of it that is dropped (a model replaced by a hot swap);
  only a reference cycle among those objects would stay, once, not per request.
- The young generation collects every 50,000 allocations instead of 700. A request allocates a
  few thousand objects that reference counting frees; the collector is for cycles, and a
  collection per few hundred requests still finds them.
"""

from __future__ import annotations

import gc

YOUNG_GENERATION_THRESHOLD = 50_000
# Young collections before a middle one, middle ones before a full one.
OLDER_GENERATION_THRESHOLDS = (20, 100)


def settle_after_start() -> None:
    """Collect what start-up left, freeze the rest, and space out collections (in each worker
    process, once its service is ready)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *OLDER_GENERATION_THRESHOLDS)
