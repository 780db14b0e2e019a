"""Loading a skops file while trusting only the types its caller names.

Below both the model files (`mlaas.modeling.models`) and the families (the tabular preprocessor is a
skops file too), so each can load one without importing the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlaas.core.errors import UntrustedModel

# skops refuses any type it does not know; these are the plain ones scikit-learn pipelines hold.
COMMON_TRUSTED_TYPES = ("numpy.dtype",)


def load_skops(path: Path, trusted_types: tuple[str, ...]) -> Any:
    """Load a skops file, trusting scikit-learn's own types and the ones named, nothing else."""
    import skops.io

    trusted = set(COMMON_TRUSTED_TYPES) | set(trusted_types)
    unexpected = set(skops.io.get_untrusted_types(file=path)) - trusted
    if unexpected:
        raise UntrustedModel(
            f"{path} holds types this model kind never contains: {sorted(unexpected)}; "
            "refusing to load it"
        )
    return skops.io.load(path, trusted=sorted(trusted))
