"""What the state machines over random histories (the ledger's, money's, statements') share:
each example in one transaction rolled back at its end, a clock the rules move, the rule that
changes the limit mode, and the settings they run with."""

import itertools

import time_machine
from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from accounts.services import update_limit_settings


class HistoryMachine(RuleBasedStateMachine):
    """A subclass sets ``now`` (where the clock starts), ``subscription`` and its ``admin``."""

    def __init__(self):
        super().__init__()
        self.atomic = transaction.atomic()
        self.atomic.__enter__()  # each example is rolled back in teardown
        self.keys = itertools.count(1)

    def teardown(self):
        transaction.set_rollback(True)
        self.atomic.__exit__(None, None, None)

    def _clock(self):
        return time_machine.travel(self.now, tick=False)


def limit_mode_rule(*, max_allowance: int):
    """A rule: the admin sets the limit mode and an excess allowance up to ``max_allowance``."""

    @rule(
        mode=st.sampled_from(["hard", "soft"]),
        allowance=st.decimals(min_value=0, max_value=max_allowance, places=2, allow_nan=False),
    )
    def change_the_limit_mode(self, mode, allowance):
        with self._clock():
            update_limit_settings(
                subscription=self.subscription,
                limit_mode=mode,
                excess_allowance=allowance,
                actor=self.admin,
            )
        self.subscription.refresh_from_db()

    return change_the_limit_mode


def run_histories(machine, *, examples: int, steps: int) -> None:
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            database=None,  # no example database in the work tree
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
