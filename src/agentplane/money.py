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
