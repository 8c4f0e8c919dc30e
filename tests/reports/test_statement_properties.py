"""Statements over random histories (the money state machine's events, grants, price and
mode changes across an Auckland month end): every month's statement, as of each step, equals
its ledger line by line, and every ledger row is in exactly one statement."""

from decimal import Decimal

from hypothesis.stateful import invariant

from core.money import line_amount
from credits.models import BillingPeriod, CreditEvent
from reports.statements import build_statements, local_month
from tests.credits.test_money_properties import MoneyMachine
from tests.histories import run_histories


class StatementMachine(MoneyMachine):
    @invariant()
    def statements_equal_the_ledger(self):
        periods = list(
            BillingPeriod.objects.filter(subscription=self.subscription)
            .select_related("subscription")
            .order_by("start")
        )
        statements = build_statements(
            [(self.subscription, local_month(period)) for period in periods], now=self.now
        )
        counted = Decimal(0)
        for period, statement in zip(periods, statements, strict=True):
            rows = CreditEvent.objects.filter(
                period=period, recorded_at__lte=min(statement.closes_at, self.now)
            )
            excess_lines = {line.starts: line for line in statement.lines if line.kind == "excess"}
            for line in (line for line in statement.lines if line.kind == "base"):
                interval = list(rows.filter(timestamp__gte=line.starts, timestamp__lt=line.ends))
                base = sum((e.credits - e.grant_credits - e.excess_credits for e in interval), 0)
                excess = sum((e.excess_credits for e in interval), Decimal(0))
                excess_line = excess_lines.get(line.starts)
                assert line.credits == base
                assert (excess_line.credits if excess_line else 0) == excess
                cost = sum((e.cost for e in interval), Decimal(0))
                if line.unit_price is None:
                    assert cost == 0 and line.amount is None
                    continue
                excess_price = excess_line.unit_price if excess_line else 0
                assert cost == base * line.unit_price + excess * excess_price
                assert line.amount == line_amount(base, line.unit_price, statement.currency)
                if excess_line:
                    assert excess_line.amount == line_amount(
                        excess, excess_price, statement.currency
                    )
            amounts = [line.amount for line in statement.lines if line.amount is not None]
            if statement.currency:
                assert statement.total == sum(amounts)
            counted += sum(
                (
                    line.credits
                    for line in statement.lines
                    if line.kind in ("base", "excess", "grants_used", "late_correction")
                ),
                Decimal(0),
            )
        ledger = CreditEvent.objects.filter(subscription=self.subscription)
        assert counted == sum((event.credits for event in ledger), Decimal(0))


def test_statements_equal_the_ledger_for_random_histories(db):
    run_histories(StatementMachine, examples=10, steps=20)
