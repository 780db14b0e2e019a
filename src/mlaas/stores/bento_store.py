"""The one module that reaches BentoML's private API (`bentoml._internal`).

BentoML 1.4 has no public way to read where its store is, nor to choose its Prometheus folder:
checked were the `bentoml` namespace (no home, store or configuration getter), `bentoml.bentos`
and `bentoml.models` (their store is a `_bento_store` / `_model_store` argument injected from
`BentoMLContainer`), the environment variables it reads (only BENTOML_HOME, from which the
Prometheus folder is derived) and `bentoml serve --help` (no metrics-folder option). Both are
read from `BentoMLContainer`, here alone, so a BentoML upgrade that moves it breaks one module.

Importing this module imports no BentoML: BentoML reads BENTOML_HOME when first imported, and
`mlaas serve` checks its address before loading it.
"""

from __future__ import annotations

from pathlib import Path

# `bentoml serve` with its Prometheus folder set first. BentoML derives that folder from
# BENTOML_HOME alone (no setting, no variable) and empties it when a server starts; the folder
# is set here, in the process that runs BentoML's CLI, before the CLI reads it. Its workers get
# it from the environment the CLI gives them. A script of its own (run with `python -c`): it
# imports no mlaas, so the server imports the Bento's copy of mlaas, not the caller's.
BENTOML_WITH_METRICS_DIR = """\
import sys
from bentoml._internal.configuration.containers import BentoMLContainer
BentoMLContainer.prometheus_multiproc_dir.set(sys.argv.pop(1))
sys.argv[0] = "bentoml"
from bentoml_cli.cli import cli
sys.exit(cli())
"""


def bentoml_store_home() -> Path:
    """The folder of the BentoML store this process uses (fixed when BentoML was first
    imported, from BENTOML_HOME)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.bentoml_home.get()).resolve()
