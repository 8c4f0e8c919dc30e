"""Signals that other apps listen to.

``demo_seeded``: sent by ``seed_demo`` inside its transaction, once the demo world and its
ledger are in place, with ``world`` (``credits.management.demo_world.DemoWorld``) and ``now``.
Apps above ``credits`` (``reports``) add what they show in the demo, idempotently, and
return the lines to print about it; ``credits`` itself depends on none of them.
"""

from django.dispatch import Signal

demo_seeded = Signal()
