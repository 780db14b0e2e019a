"""What a family's data and its models module both name: the columns of its tables and what its
model card records about inputs.

A family's module (data, gate, served schema) imports no torch or scikit-learn, so the model
server's leader process builds its API from it in a fraction of a second; its models module
(`*_models`) does, and is imported only to train or to load a model. Both read these names from
here. (Images keep theirs in `image_instances`, with the served image they describe.)
"""

from __future__ import annotations

from mlaas.core.model_card import CardInputs

TEXT = "text"
"""The text column of the text family's tables."""

USER, ITEM, RATING = "user_id", "item_id", "rating"
"""The columns of the recommendation family's tables."""


class TabularInputs(CardInputs):
    """A card's `inputs`: each feature's name and kind (NUMBER or CATEGORY), in column order."""

    features: dict[str, str]
