"""claim_run_folder: a script writes only into a new or empty folder, its own earlier run, or with --overwrite."""

import json

import pytest

from minirlaif.checkpoint import OWNER_FILE, claim_run_folder
from minirlaif.errors import InputError

KEYS = {"data", "out", "lr", "seed", "overwrite"}


def owner(folder):
    return json.loads((folder / OWNER_FILE).read_text())["script"]


def test_new_and_empty_folders_are_claimed(tmp_path):
    claim_run_folder(tmp_path / "new" / "run", "train_sft.py", KEYS)
    (tmp_path / "empty").mkdir()
    claim_run_folder(tmp_path / "empty", "train_sft.py", KEYS)
    assert owner(tmp_path / "new" / "run") == owner(tmp_path / "empty") == "train_sft.py"


def test_own_run_folder_is_reused_and_others_are_refused(tmp_path):
    run = tmp_path / "run"
    claim_run_folder(run, "train_sft.py", KEYS)
    (run / "metrics.jsonl").write_text("{}\n")
    claim_run_folder(run, "train_sft.py", KEYS)  # the same script again: fine
    with pytest.raises(InputError, match=r"holds the run of train_sft.py; pick another --out, or pass --overwrite"):
        claim_run_folder(run, "train_rm.py", KEYS)
    assert owner(run) == "train_sft.py"


def test_folder_of_user_files_is_refused_unless_overwrite(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"files that evaluate.py did not write \(notes.txt\)"):
        claim_run_folder(tmp_path, "evaluate.py", KEYS)
    assert not (tmp_path / OWNER_FILE).exists()
    claim_run_folder(tmp_path, "evaluate.py", KEYS, overwrite=True)
    assert owner(tmp_path) == "evaluate.py" and (tmp_path / "notes.txt").read_text() == "mine"


def test_run_folders_from_before_owner_files_are_recognised_by_their_args(tmp_path):
    (tmp_path / "args.json").write_text(json.dumps({k: 0 for k in KEYS - {"overwrite"}}))
    claim_run_folder(tmp_path, "train_sft.py", KEYS)  # exactly this script's settings: its own folder
    other = tmp_path / "other"
    other.mkdir()
    (other / "args.json").write_text(json.dumps({"data": 0, "mine": 1}))
    with pytest.raises(InputError, match="did not write"):
        claim_run_folder(other, "train_sft.py", KEYS)


def test_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        claim_run_folder(tmp_path / "f", "train_sft.py", KEYS)
