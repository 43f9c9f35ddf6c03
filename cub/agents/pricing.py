"""Cost from a configured price table, for agents that report tokens but not dollars.

cub never invents a price: without an entry in ``budget.prices`` for the model, cost stays
unknown (``None``). Prices are US dollars per million tokens (``ModelPrice`` in the config).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cub.config.schema import ModelPrice
    from cub.records.schemas import Usage

_PER = 1_000_000


def price_for(prices: Mapping[str, ModelPrice], model: str | None) -> ModelPrice | None:
    """The configured price of ``model`` (matched exactly), or None."""
    if not model:
        return None
    return prices.get(model)


def cost_of(usage: Usage, price: ModelPrice) -> float:
    """Dollars for ``usage`` at ``price`` (cache writes at ``cache_write_per_mtok``)."""
    dollars = (
        usage.input_tokens * price.input_per_mtok
        + usage.output_tokens * price.output_per_mtok
        + usage.cache_read_tokens * price.cache_read_per_mtok
        + usage.cache_creation_tokens * price.cache_write_per_mtok
    ) / _PER
    return round(dollars, 9)
