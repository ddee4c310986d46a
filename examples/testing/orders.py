"""A small order pipeline: the subject of the example tests next to it.

Lines like ``"alice,12.50,USD"`` are parsed into :class:`Order` records,
converted to euros by asking a (slow) exchange-rate service, and totalled
per customer. Bad lines go to a dead-letter sink instead of stopping the
pipeline. See ``test_orders.py`` for how to test it with nanostream_testing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import trio

from nanostream_trio import NanoNode, Pipeline, Retry


@dataclasses.dataclass(frozen=True)
class Order:
    customer: str
    amount: float
    currency: str


class ParseOrder(NanoNode):
    """``"customer,amount,currency"`` -> :class:`Order`; raises ValueError on anything else."""

    def process_item(self, line: str) -> Order:
        customer, amount, currency = line.split(",")
        return Order(customer.strip(), float(amount), currency.strip().upper())


RateService = Callable[[str], Awaitable[float]]


async def slow_rates(currency: str) -> float:
    """A stand-in for an HTTP call: half a second, fixed rates."""
    await trio.sleep(0.5)
    return {"EUR": 1.0, "USD": 0.9, "GBP": 1.2}[currency]


class ToEuros(NanoNode):
    """Converts each order to euros with a rate service, retrying its failures."""

    def __init__(self, rates: RateService = slow_rates, **options: object) -> None:
        options.setdefault("on_error", "retry")
        options.setdefault("retry", Retry(attempts=3, backoff=1.0))
        super().__init__(**options)  # type: ignore[arg-type]
        self.rates = rates

    async def process_item(self, order: Order) -> Order:
        rate = await self.rates(order.currency)
        return dataclasses.replace(order, amount=round(order.amount * rate, 2), currency="EUR")


class RunningTotal(NanoNode):
    """Emits ``(customer, total so far)`` after each order."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.totals: dict[str, float] = {}

    def process_item(self, order: Order) -> tuple[str, float]:
        total = round(self.totals.get(order.customer, 0.0) + order.amount, 2)
        self.totals[order.customer] = total
        return order.customer, total


def build(
    source: NanoNode, totals: NanoNode, rejected: NanoNode, rates: RateService = slow_rates
) -> Pipeline:
    """Wire ``source > ParseOrder > ToEuros > RunningTotal > totals``, bad lines to ``rejected``."""
    parse = ParseOrder(name="parse", on_error="dead_letter")
    source > parse > ToEuros(rates, name="to_euros") > RunningTotal(name="total") > totals
    parse.dead_letters > rejected
    return Pipeline(source, name="orders")
