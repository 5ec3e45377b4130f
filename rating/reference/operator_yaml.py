"""operator.yaml -> :class:`Operator`: name, home networks, currencies and invoice rounding."""

from __future__ import annotations

import re

from rating.reference import yaml_fields as f
from rating.reference.model import Currency, Operator, RoundingMode

CURRENCY_CODE = re.compile(r"[A-Z]{3}")
_NETWORK = re.compile(r"[0-9]{5,6}")
ROUNDING_MODES = tuple(mode.value for mode in RoundingMode)


def read_operator(reader: f.FieldReader, data: object) -> Operator | None:
    """Build the operator from a parsed operator.yaml; issues go to ``reader``."""
    top = reader.mapping(data, (), ("operator", "home_networks", "currencies",
                                    "invoice_rounding", "tax_rounding"))
    if top is None:
        return None
    name = reader.field(top, (), "operator", f.text())
    networks = reader.sequence(top, (), "home_networks", non_empty=False)
    network_parse = f.text(_NETWORK, "a quoted MCC+MNC of 5 or 6 digits such as \"26201\"")
    home_networks = []
    for index, network in enumerate(networks or ()):
        try:
            home_networks.append(network_parse(network))
        except ValueError as exc:
            reader.issue(("home_networks", index), str(exc))
    invoice = reader.field(top, (), "invoice_rounding", f.choice(ROUNDING_MODES))
    tax = reader.field(top, (), "tax_rounding", f.choice(ROUNDING_MODES))
    return Operator(
        name=name,
        home_networks=tuple(home_networks),
        currencies=_read_currencies(reader, top),
        invoice_rounding=RoundingMode(invoice) if invoice else None,
        tax_rounding=RoundingMode(tax) if tax else None,
    )


def _read_currencies(reader: f.FieldReader, top: dict) -> dict[str, Currency]:
    table = reader.field(top, (), "currencies", _non_empty_mapping)
    currencies = {}
    for code, spec in (table or {}).items():
        path = ("currencies", code)
        if not isinstance(code, str) or CURRENCY_CODE.fullmatch(code) is None:
            reader.issue(path, f"expected an ISO 4217 currency code of 3 capital letters such as "
                               f"EUR, got {code!r}")
            continue
        spec = reader.mapping(spec, path, ("minor_unit_digits",))
        digits = reader.field(spec, path, "minor_unit_digits", f.integer(0, 6)) if spec else None
        # Declared even when its digits are bad, so accounts and plans using it are not flagged too.
        currencies[code] = Currency(code, digits)
    return currencies


def _non_empty_mapping(value: object) -> dict:
    if not isinstance(value, dict) or not value:
        raise ValueError(f"expected a mapping of currency codes such as "
                         f"{{EUR: {{minor_unit_digits: 2}}}}, got {f.describe(value)}")
    return value
