"""Prices: a layered catalog (user YAML > bundled > genai-prices), evaluated at each call's time.

``PriceCatalog.resolve(provider, model)`` gives the :class:`Price` in force (per-token USD
``Decimal`` prices, long-context tiers, audio, batch and processing-tier rates) or ``None``;
:func:`price_view` is what ``costwatch prices MODEL`` shows; :func:`estimate_cost` what
``costwatch estimate`` prints; :data:`gaps` counts calls priced with a known gap.
"""

from costwatch.pricing._catalog import PriceCatalog
from costwatch.pricing._estimate import CostEstimate, estimate_cost, format_estimate
from costwatch.pricing._gaps import AUDIO_AT_TEXT_RATE, PriceGaps, gaps
from costwatch.pricing._names import (
    canonical_provider,
    infer_provider,
    model_candidates,
    provider_for_url,
)
from costwatch.pricing._price import Price, PriceTier, per_token
from costwatch.pricing._rules import PriceRule, load_user_prices
from costwatch.pricing._view import (
    PriceRow,
    PriceView,
    format_price_table,
    format_when,
    price_header,
    price_view,
)

__all__ = [
    "AUDIO_AT_TEXT_RATE",
    "CostEstimate",
    "Price",
    "PriceCatalog",
    "PriceGaps",
    "PriceRow",
    "PriceRule",
    "PriceTier",
    "PriceView",
    "canonical_provider",
    "estimate_cost",
    "format_estimate",
    "format_price_table",
    "gaps",
    "infer_provider",
    "load_user_prices",
    "model_candidates",
    "per_token",
    "price_header",
    "price_view",
    "provider_for_url",
    "format_when",
]
