import pytest

from tests import factories


@pytest.fixture
def teams(world):
    """Acme's teams: carol (member) in Support, bob (project manager) in Platform."""
    support = factories.TeamFactory(subscription=world.subscription, name="Support")
    platform = factories.TeamFactory(subscription=world.subscription, name="Platform")
    factories.team_membership(world.member, support)
    factories.team_membership(world.manager, platform)
    return support, platform
