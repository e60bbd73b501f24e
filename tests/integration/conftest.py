"""The integration tier: everything that runs on the database, the queue and the fake API.

Every test here gets the database (transactional: triggers, NOTIFY and the worker's own
connections see what it commits), unless it marks its own database access (other
databases, or a non-transactional test), and an empty queue before and after it."""

import pytest


def pytest_collection_modifyitems(config, items):
    here = config.rootpath / "tests" / "integration"
    for item in items:
        if here in item.path.parents and item.get_closest_marker("django_db") is None:
            item.add_marker(pytest.mark.django_db(transaction=True))


@pytest.fixture(autouse=True)
def _queue_emptied_around_each_test(request):
    request.getfixturevalue("empty_queue")
