"""A small project store: three classes, six pool items and two test items."""

from __future__ import annotations

import pytest

from learnloss.project.store import ProjectStore

CLASSES = ["bird", "cat", "dog"]
POOL = [f"img/{i}.png" for i in range(6)]
TEST = ["test/0.png", "test/1.png"]


@pytest.fixture
def store(tmp_path):
    with ProjectStore(tmp_path / "project", create=True) as store:
        with store.transaction() as db:
            store.add_classes(db, CLASSES)
            store.add_items(db, POOL, "pool")
            store.add_items(db, TEST, "test")
        yield store
