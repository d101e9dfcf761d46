"""The bundled price table: ``bundled_prices.yaml`` (package data), validated as price rules.

Data apart from code: the table is a YAML file in the same shape as a user price file, each
entry with its provenance (``source`` page and ``checked`` date); see the file's header.
"""

from __future__ import annotations

from importlib import resources

from costwatch.pricing._rules import PriceRule, load_user_prices

BUNDLED_FILE = "bundled_prices.yaml"


def bundled_rules() -> tuple[PriceRule, ...]:
    """The bundled table's rules (``price.source`` ``"bundled"``)."""
    import yaml

    text = resources.files("costwatch.pricing").joinpath(BUNDLED_FILE).read_text("utf-8")
    return load_user_prices(yaml.safe_load(text), origin="bundled", field_prefix="bundled")
