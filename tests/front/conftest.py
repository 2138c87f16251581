"""Fixtures of the front's tests."""

from __future__ import annotations

import pytest

from videoitg.front import bounds, config


@pytest.fixture
def budgets(monkeypatch: pytest.MonkeyPatch) -> list[bounds.ByteBudget]:
    """The held-bytes budget of each front the test starts (`config.held_budget`), in order."""
    made: list[bounds.ByteBudget] = []
    held_budget = config.held_budget
    monkeypatch.setattr(config, "held_budget", lambda cfg: made.append(held_budget(cfg)) or made[-1])
    return made
