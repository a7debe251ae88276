"""The built-in benchmark: catalogue sanity, determinism, split hygiene, and that every program runs."""

import ast
import json
import os
import re
import string
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from minirlaif.data.apibench import API_DB_KEYS
from minirlaif.data.builtin import (
    FILES, MANIFEST, api_database, build_builtin, builtin_records, ensure_builtin, py_literal,
)
from minirlaif.data.catalogue import CATALOGUE
from minirlaif.data.records import APIRecord

N_TRAIN, N_EVAL = 4000, 400
BY_NAME = {api.api_name: api for api in CATALOGUE}


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def split_code(text):
    """(instruction, program) of a HuggingFace-layout `code` text."""
    assert text.startswith("###Instruction: ")
    instruction = text[len("###Instruction: "):text.index("\n###Output: ")]
    return instruction, text.split("\n<<<code>>>: ", 1)[1]


def callee(call: ast.Call) -> str:
    return ast.unparse(call.func)


def template_regex(template):
    """A regex matching every instruction a template can produce."""
    parts = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is not None:
            parts.append("(.+)")
    return re.compile("".join(parts), re.DOTALL)


def slot_values(program, names):
    """{slot: source text of its value} from the program's top-level slot assignments."""
    values = {}
    for node in ast.parse(program).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id in names:
            values[node.targets[0].id] = ast.unparse(node.value)
    return values


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The default-size data set, written once for the whole module."""
    out = tmp_path_factory.mktemp("builtin")
    paths = build_builtin(out, seed=0, n_train=N_TRAIN, n_eval=N_EVAL)
    data = {split: read_jsonl(paths[split]) for split in ("train", "eval")}
    data["api"] = read_jsonl(paths["api"])
    data["paths"] = paths
    return data


# --------------------------------------------------------------------------------- the catalogue


def test_catalogue_breadth():
    assert len(CATALOGUE) >= 80
    assert len({api.module for api in CATALOGUE}) >= 12
    domains = Counter(api.domain for api in CATALOGUE)
    assert 10 <= len(domains) <= 20
    assert min(domains.values()) >= 3, domains  # a wrong API of the right domain is always possible
    assert len(BY_NAME) == len(CATALOGUE), "API names (callees) must be unique"


def test_catalogue_calls_match_import_style():
    for api in CATALOGUE:
        tree = ast.parse(api.call, mode="eval").body
        assert isinstance(tree, ast.Call) and callee(tree) == api.api_name, api.call
        prefix = "np." if api.module == "numpy" else api.module + "."
        assert api.api_name.startswith(prefix) and api.api_name.count("(") == 0, api.call
        body = ast.parse(api.program.replace("{call}", api.call))
        used = {n.id for n in ast.walk(body) if isinstance(n, ast.Name)}
        assert set(api.slot_names) <= used, api.call  # every slot variable is used by the program


def test_catalogue_templates_and_pools():
    for api in CATALOGUE:
        assert len(api.templates) + len(api.heldout) >= 4 and api.heldout and len(api.templates) >= 3, api.call
        assert not set(api.templates) & set(api.heldout), api.call
        names = set(api.slot_names)
        for template in api.templates + api.heldout:
            fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
            assert set(fields) == names, (api.call, template)  # every slot named, nothing else
        for key, (train, held) in api.slots.items():
            train_lits, eval_lits = {py_literal(v) for v in train}, {py_literal(v) for v in held}
            assert train_lits and eval_lits and not train_lits & eval_lits, (api.call, key)
            for value in list(train) + list(held):
                assert ast.literal_eval(py_literal(value)) == value, value


def test_py_literal_round_trips():
    for value in ["plain", 'has "quotes"', "a\nb", [1, "x"], (3,), (2, 3), {"k": [1, 2]}, -1.5, None]:
        assert ast.literal_eval(py_literal(value)) == value
    assert py_literal(["a", 1]) == '["a", 1]' and py_literal((3,)) == "(3,)"


# --------------------------------------------------------------------------------- files and sizes


def test_files_sizes_and_manifest(built):
    assert len(built["train"]) == N_TRAIN and len(built["eval"]) == N_EVAL
    assert len(built["api"]) == len(CATALOGUE)
    manifest = json.loads(built["paths"]["manifest"].read_text())
    assert manifest["seed"] == 0 and manifest["n_train"] == N_TRAIN and manifest["n_eval"] == N_EVAL
    assert manifest["n_apis"] == len(CATALOGUE) and set(manifest["files"]) == set(FILES.values())
    for split in ("train", "eval"):
        counts = Counter(r["api_data"]["api_name"] for r in built[split])
        assert set(counts) == set(BY_NAME), f"some API missing from {split}"
        assert max(counts.values()) - min(counts.values()) <= 1  # balanced


def test_small_sizes_and_too_small(tmp_path):
    paths = build_builtin(tmp_path, seed=3, n_train=150, n_eval=len(CATALOGUE))
    assert len(read_jsonl(paths["train"])) == 150 and len(read_jsonl(paths["eval"])) == len(CATALOGUE)
    with pytest.raises(ValueError):
        builtin_records("eval", n_eval=len(CATALOGUE) - 1)
    with pytest.raises(ValueError):
        builtin_records("test")


def test_deterministic_and_seed_dependent(built, tmp_path):
    same = build_builtin(tmp_path / "same", seed=0, n_train=N_TRAIN, n_eval=N_EVAL)
    other = build_builtin(tmp_path / "other", seed=1, n_train=N_TRAIN, n_eval=N_EVAL)
    for name in ("train", "eval", "api", "manifest"):
        assert same[name].read_bytes() == built["paths"][name].read_bytes(), name
    assert other["train"].read_bytes() != same["train"].read_bytes()
    assert other["eval"].read_bytes() != same["eval"].read_bytes()
    assert other["api"].read_bytes() == same["api"].read_bytes()  # the database depends on the catalogue only


def test_deterministic_across_processes(built, tmp_path):
    """A fresh interpreter with another hash seed writes the same bytes (no hash()/set order leaks)."""
    code = (f"from minirlaif.data.builtin import build_builtin; "
            f"build_builtin({str(tmp_path)!r}, seed=0, n_train={N_TRAIN}, n_eval={N_EVAL})")
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": root}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=root, timeout=60)
    for name in ("train", "eval", "api", "manifest"):
        assert (tmp_path / built["paths"][name].name).read_bytes() == built["paths"][name].read_bytes(), name


def test_records_match_files(built, tmp_path):
    from minirlaif.data.apibench import write_apibench

    records = builtin_records("eval", seed=0, n_train=N_TRAIN, n_eval=N_EVAL)
    assert all(isinstance(r, APIRecord) for r in records)
    assert [r.line for r in records] == list(range(1, N_EVAL + 1))
    write_apibench(records, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == built["paths"]["eval"].read_bytes()


# --------------------------------------------------------------------------------- record contents


def test_api_database_entries(built):
    assert [e["api_name"] for e in built["api"]] == [api.api_name for api in CATALOGUE]
    assert built["api"] == api_database()
    for entry, api in zip(built["api"], CATALOGUE):
        assert list(entry) == list(API_DB_KEYS)
        assert entry["api_call"] == api.call and entry["domain"] == api.domain
        assert entry["framework"] in ("Python Standard Library", "NumPy")
        assert entry["performance"] == {"dataset": "N/A", "accuracy": "N/A"}
        assert set(entry["api_arguments"]) == set(api.slot_names)
        assert api.call in entry["example_code"]


def test_records_are_consistent(built):
    db = {e["api_name"]: e for e in built["api"]}
    db_callees = set(db)
    for split in ("train", "eval"):
        for row in built[split]:
            assert list(row) == ["code", "api_call", "provider", "api_data"]
            entry = db[row["api_data"]["api_name"]]
            assert row["api_data"] == entry and row["api_call"] == entry["api_call"]
            assert row["provider"] == entry["framework"]
            assert f"<<<domain>>>: {entry['domain']}\n<<<api_call>>>: {row['api_call']}\n" in row["code"]
            instruction, program = split_code(row["code"])
            assert 0 < len(instruction.split()) < 40, instruction
            tree = ast.parse(program)
            assert row["api_call"] in program
            callees = {callee(n) for n in ast.walk(tree) if isinstance(n, ast.Call)}
            # the program calls its API and no other API of the database (callee matching is unambiguous)
            assert callees & db_callees == {entry["api_name"]}, program
            lines = program.split("\n")
            assert lines[0].startswith("import ") and lines[1] == "" and lines[-1].startswith("print(")
            assert 4 <= len(lines) <= 10, program
            assert set(slot_values(program, BY_NAME[entry["api_name"]].slot_names)) == set(
                BY_NAME[entry["api_name"]].slot_names)


def test_eval_is_unseen(built):
    seen = defaultdict(set)  # (api, slot) -> value texts used in training
    train_instructions = set()
    for row in built["train"]:
        api = BY_NAME[row["api_data"]["api_name"]]
        instruction, program = split_code(row["code"])
        train_instructions.add(instruction)
        for name, text in slot_values(program, api.slot_names).items():
            seen[api.api_name, name].add(text)
        # training phrasings only: no train instruction fits a held-out template
        assert any(template_regex(t).fullmatch(instruction) for t in api.templates), instruction
        assert not any(template_regex(t).fullmatch(instruction) for t in api.heldout), instruction
    n_heldout = 0
    for row in built["eval"]:
        api = BY_NAME[row["api_data"]["api_name"]]
        instruction, program = split_code(row["code"])
        assert instruction not in train_instructions
        for name, text in slot_values(program, api.slot_names).items():
            assert text not in seen[api.api_name, name], (api.api_name, name, text)
        n_heldout += any(template_regex(t).fullmatch(instruction) for t in api.heldout)
    assert 0.2 <= n_heldout / len(built["eval"]) <= 0.4
    assert len(train_instructions) > 0.9 * N_TRAIN  # few repeats within the train split


# --------------------------------------------------------------------------------- programs run

RUNNER = r"""
import contextlib, io, json, sys, time
report = []
for source in json.load(sys.stdin):
    out = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(source, "<program>", "exec"), {"__name__": "__main__"})
        error = None
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included: report, keep going
        error = f"{type(exc).__name__}: {exc}"
    report.append({"out": out.getvalue(), "error": error, "seconds": time.perf_counter() - start})
json.dump(report, sys.stdout)
"""


def run_programs(programs, hash_seed):
    """Run each program in a fresh namespace inside ONE subprocess; one report per program."""
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER], input=json.dumps(programs), capture_output=True, text=True,
        timeout=120, env={**os.environ, "PYTHONHASHSEED": str(hash_seed)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert len(report) == len(programs)
    return report


@pytest.mark.slow
def test_every_program_runs_and_is_deterministic(built):
    programs = [split_code(row["code"])[1] for split in ("train", "eval") for row in built[split]]
    first = run_programs(programs, hash_seed=1)
    failures = [(p, r["error"]) for p, r in zip(programs, first) if r["error"] or not r["out"].strip()]
    assert not failures, failures[:5]
    assert max(r["seconds"] for r in first) < 1.0
    # again, in reverse order and with another hash seed: same output for every program
    second = run_programs(programs[::-1], hash_seed=2)[::-1]
    assert [r["out"] for r in first] == [r["out"] for r in second]


def test_programs_run_standalone(built):
    """One program per module, each as its own `python -c` process, prints what the runner saw."""
    by_module = {}
    for row in built["eval"]:
        by_module.setdefault(BY_NAME[row["api_data"]["api_name"]].module, split_code(row["code"])[1])
    assert len(by_module) == len({api.module for api in CATALOGUE})
    programs = list(by_module.values())
    report = run_programs(programs, hash_seed=0)
    for program, r in zip(programs, report):
        proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0 and proc.stdout.strip(), (program, proc.stderr)
        assert proc.stdout == r["out"]


def test_runner_reports_failures():
    """The runner really catches a failing or silent program (so the checks above can fail)."""
    report = run_programs(["print(1)", "raise ValueError('boom')", "import sys\nsys.exit(3)", "x = 1"], 0)
    assert report[0] == {"out": "1\n", "error": None, "seconds": report[0]["seconds"]}
    assert report[1]["error"].startswith("ValueError") and report[2]["error"].startswith("SystemExit")
    assert report[3]["error"] is None and report[3]["out"] == ""


# --------------------------------------------------------------------------------- ensure_builtin


def test_ensure_builtin_builds_reuses_and_rebuilds(tmp_path):
    out = tmp_path / "data"
    assert ensure_builtin(out, seed=0, n_train=200, n_eval=150) == out
    manifest = out / MANIFEST
    stamp = {name: (out / name).stat().st_mtime_ns for name in list(FILES.values()) + [MANIFEST]}
    ensure_builtin(out, seed=0, n_train=200, n_eval=150)  # complete: nothing rewritten
    assert stamp == {name: (out / name).stat().st_mtime_ns for name in stamp}

    first_train = (out / FILES["train"]).read_bytes()
    ensure_builtin(out, seed=1, n_train=200, n_eval=150)  # other seed: regenerated
    assert json.loads(manifest.read_text())["seed"] == 1 and (out / FILES["train"]).read_bytes() != first_train

    manifest.unlink()  # half-written folder (no manifest): regenerated
    (out / FILES["eval"]).write_text("garbage\n")
    ensure_builtin(out, seed=1, n_train=200, n_eval=150)
    assert manifest.exists() and len(read_jsonl(out / FILES["eval"])) == 150

    (out / FILES["train"]).write_text("tampered\n")  # file changed behind the manifest's back
    ensure_builtin(out, seed=1, n_train=200, n_eval=150)
    assert len(read_jsonl(out / FILES["train"])) == 200


def test_default_folder_is_under_repo_data():
    from minirlaif.data import builtin
    from minirlaif.data.records import REPO_ROOT

    assert builtin.DEFAULT_DIR == REPO_ROOT / "data" / "builtin"
    assert isinstance(builtin.DEFAULT_DIR, Path)
