"""Amounts of money (and prices) as the API writes them.

The database keeps costs as numeric(20, 10), so a zero comes back as Decimal('0E-10')
and a quarter as Decimal('0.2500000000'). Responses write them plainly: "0", "0.25".
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import PlainSerializer


def plain(amount: Decimal) -> str:
    """0E-10 -> "0", 0.2500000000 -> "0.25", 1E+2 -> "100"."""
    return format(amount.normalize(), "f") if amount.is_finite() else str(amount)


Money = Annotated[Decimal, PlainSerializer(plain, return_type=str, when_used="json")]


def known_cost(amount: Decimal | None, unpriced: int) -> Decimal | None:
    """A total as an API shows it: None (unknown) when its calls were all unpriced, so
    that no unknown cost reads as zero; else what is known (`cost_complete` says if all)."""
    if unpriced and not amount:
        return None
    return amount if amount is not None else Decimal(0)


def shown(amount: Decimal | None, unpriced: int = 0) -> str:
    """A cost for a terminal: `$0.0123` (to 4 places, so columns align; smaller amounts
    in full, so a cheap call never reads as zero), `—` when unknown, `$0.0123 + unknown` when calls
    without a price add to it."""
    if amount is None or (unpriced and not amount):
        return "—"
    place = Decimal("0.0001")
    small = amount and abs(amount) < place
    text = "$" + (plain(amount) if small else f"{amount.quantize(place):f}")
    return text + " + unknown" if unpriced else text
