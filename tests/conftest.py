from datetime import date
from pathlib import Path

import pytest

from tests.tiny import ROWS_PER_DAY, SPEC_PATH


def pytest_collection_modifyitems(config, items):
    """`slow`: every integration / serving test (the CLI end to end, MLflow stores and servers,
    several processes) besides the ones marked `slow` by hand; `make test-fast` leaves them out."""
    for item in items:
        if item.get_closest_marker("integration") or item.get_closest_marker("serving"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """3 synthetic days of ROWS_PER_DAY rows (generated once per session)."""
    from recsys_matta.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(out=root, days=3, rows_per_day=ROWS_PER_DAY, seed=7, start_date=date(2026, 1, 1), progress=False)
    return root


@pytest.fixture
def spec():
    from recsys_matta.specs import load_spec

    return load_spec(SPEC_PATH)
