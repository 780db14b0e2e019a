"""The one module that reaches BentoML's private API (`bentoml._internal`).

BentoML 1.4 has no public way to read where its store is, nor to choose its Prometheus folder:
checked were the `bentoml` namespace (no home, store or configuration getter), `bentoml.bentos`
and `bentoml.models` (their store is a `_bento_store` / `_model_store` argument injected from
`BentoMLContainer`), the environment variables it reads (only BENTOML_HOME, from which the
Prometheus folder is derived) and `bentoml serve --help` (no metrics-folder option). Both are
read from `BentoMLContainer`, here alone, so a BentoML upgrade that moves it breaks one module.
Likewise a model in a store other than the process's current one (a served Bento's is its own
copy) is found through `ModelStore`, which has no public constructor either.

Importing this module imports no BentoML: BentoML reads BENTOML_HOME when first imported, and
`mlaas serve` checks its address before loading it.
"""

from __future__ import annotations

from pathlib import Path

from mlaas.core.errors import NotReady

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


def stored_model_folder(bentoml_home: Path, tag: str) -> Path:
    """The folder of BentoML model `tag` in the store under `bentoml_home`.

    A served Bento reads its models from its own copy of the store; a champion packaged after it
    started is only in the store it was built from, which is the one named here.
    """
    from bentoml._internal.models.model import ModelStore
    from bentoml.exceptions import BentoMLException

    store = bentoml_home / "models"
    try:
        return Path(ModelStore(store).get(tag).path)
    except (BentoMLException, ValueError) as error:  # NotFound, or a tag that is not one
        raise NotReady(f"no model {tag!r} in the BentoML store {store}: {error}") from None
