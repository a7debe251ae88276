import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minirlaif.data.records import gorilla_dir  # noqa: E402


@pytest.fixture(scope="session")
def gorilla():
    """Path of the real Gorilla APIBench files; the test is skipped when they are absent."""
    path = gorilla_dir()
    if not (path / "apibench" / "huggingface_eval.json").exists():
        pytest.skip(f"Gorilla files not found at {path} (set MINIRLAIF_GORILLA or place ../shared/gorilla)")
    return path
