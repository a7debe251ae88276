"""Bad input to every CLI: one line on stderr naming the file/line/field and the fix, exit code 2, no traceback,
and nothing half-written (no model/, no checkpoint/, no *.tmp in --out).

Every case runs the script as a subprocess, the way a user meets it. The cases are started a few at a time
(this machine has 2 cores and each start pays the torch import) and each test asserts on its own result.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from minirlaif.checkpoint import OWNER_FILE
from tiny_data import tiny_records, write_tiny

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "PYTHONHASHSEED": "0"}
ENV.pop("MINIRLAIF_KILL_AT_STEP", None)
ENV.pop("MINIRLAIF_KILL_AT", None)


# ---- the inputs --------------------------------------------------------------------------------------

def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode("utf-8")) + b"\n" for x in lines))
    return path


def build_inputs(base: Path) -> dict:
    """Tiny good data, an SFT model, a reward model, and one bad variant of each input."""
    import train_sft
    from minirlaif.policy import Seq2SeqPolicy
    from minirlaif.reward_model import RewardModel

    tiny = write_tiny(base / "data")
    good = tiny["train"].read_text(encoding="utf-8").splitlines()
    p = {**tiny, "base": base}
    bad = base / "bad"
    bad.mkdir()
    p["missing"] = bad / "does_not_exist.json"
    p["empty"] = write_lines(bad / "empty.json", [])
    p["nonjson"] = write_lines(bad / "nonjson.json", [good[0], "{\"code\": oops"])
    no_call = json.loads(good[1])
    del no_call["api_call"]
    p["missing_field"] = write_lines(bad / "missing_field.json", [good[0], json.dumps(no_call)])
    wrong = json.loads(good[1])
    wrong["api_data"] = "math.gcd"
    p["wrong_type"] = write_lines(bad / "wrong_type.json", [good[0], json.dumps(wrong)])
    p["latin1"] = write_lines(bad / "latin1.json", [good[0], good[1].replace("###Instruction: ", "###Instruction: Calcul\u00e9 ").encode("latin-1")])
    api = tiny["api"].read_text().splitlines()
    no_desc = json.loads(api[0])
    del no_desc["description"]
    p["bad_api"] = write_lines(bad / "bad_api.jsonl", [json.dumps(no_desc)] + api[1:])
    # Gorilla-style responses for the 16-line eval file: question ids are 1-based lines of it.
    p["resp_beyond"] = write_lines(bad / "responses_beyond.jsonl", [json.dumps({"question_id": 1, "text": "x"}),
                                                                   json.dumps({"question_id": 17, "text": "y"})])
    p["resp_str_id"] = write_lines(bad / "responses_str.jsonl", [json.dumps({"question_id": "3", "text": "x"})])
    p["resp_latin1"] = write_lines(bad / "responses_latin1.jsonl", [json.dumps({"question_id": 1, "text": "x"}),
                                                                   '{"question_id": 2, "text": "caf\u00e9"}'.encode("latin-1")])
    p["no_model"] = bad / "no_model_here"
    p["no_model"].mkdir()
    from tokenizers import Tokenizer, models
    from transformers import CLIPVisionConfig, PreTrainedTokenizerFast

    CLIPVisionConfig().save_pretrained(bad / "vision_model")  # a model that is neither seq2seq nor decoder-only
    p["vision_model"] = bad / "vision_model"
    words = models.WordLevel({"a": 0, "</s>": 1, "<unk>": 2}, "<unk>")
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(words), eos_token="</s>", unk_token="<unk>").save_pretrained(
        bad / "no_pad_tok")  # no pad token, as GPT-2's
    p["no_pad_tok"] = bad / "no_pad_tok"

    # An SFT run (a few steps: only its shape matters here) and a reward model made from it.
    sft_args = ["--data", str(tiny["train"]), "--eval-data", str(tiny["eval"]), "--api-db", str(tiny["api"]),
                "--out", str(base / "sft"), "--batch-size", "8", "--vocab-size", "300", "--samples", "0",
                "--max-steps", "3", "--device", "cpu"]
    train_sft.main(train_sft.parse_config(train_sft.Config, "", sft_args))
    p["sft"] = base / "sft"
    RewardModel.from_pretrained(base / "sft" / "model").save_pretrained(base / "rm" / "model")
    p["rm"] = base / "rm"

    # A reward model from a different model: another vocabulary.
    torch.manual_seed(0)
    other = Seq2SeqPolicy.from_preset("tiny", vocab_size=333, pad_id=0, eos_id=1)
    RewardModel(other.backbone).save_pretrained(base / "rm_other_vocab" / "model")
    p["rm_other_vocab"] = base / "rm_other_vocab"
    # A reward model whose normalisation file holds NaN (json writes and reads NaN).
    shutil.copytree(base / "rm", base / "rm_nan")
    (base / "rm_nan" / "model" / "reward_norm.json").write_text('{"gain": NaN, "bias": 0.0}\n')
    p["rm_nan"] = base / "rm_nan"

    # A tokenizer that does not round-trip code: SentencePiece with its default normaliser (collapses
    # whitespace, drops newlines).
    import sentencepiece as spm

    recs = tiny_records(64)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter([r.instruction for r in recs] + [r.code for r in recs]),
                                   model_writer=buf, vocab_size=120, hard_vocab_limit=False, model_type="bpe",
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    (base / "lossy_tok").mkdir()
    (base / "lossy_tok" / "spm.model").write_bytes(buf.getvalue())
    p["lossy_tok"] = base / "lossy_tok"
    # A tokenizer that round-trips but has more tokens (400) than the SFT model's vocabulary (306).
    from minirlaif.tokenizer import SentencePieceTokenizer

    more = tiny_records(256)
    SentencePieceTokenizer.train([r.instruction for r in more] + [r.code for r in more], vocab_size=400).save(base / "big_tok")
    p["big_tok"] = base / "big_tok"

    # A PPO run folder whose checkpoint was made with the adaptive KL controller.
    ckpt = base / "ppo_adaptive" / "checkpoint"
    shutil.copytree(base / "sft" / "model", ckpt / "model")
    policy = Seq2SeqPolicy.from_pretrained(base / "sft" / "model")
    optim = torch.optim.AdamW(policy.parameters(), lr=5e-5, weight_decay=0.0)
    torch.save({"optimizer": optim.state_dict(), "iteration": 1,
                "kl_controller": {"kind": "adaptive", "value": 0.05, "target": 6.0, "horizon": 10000.0}},
               ckpt / "state.pt")
    p["ppo_adaptive"] = base / "ppo_adaptive"
    (p["ppo_adaptive"] / OWNER_FILE).write_text('{"script": "train_ppo.py"}')  # a run folder of train_ppo.py

    # An SFT run folder whose checkpoint state is a truncated file.
    shutil.copytree(base / "sft" / "model", base / "sft_corrupt" / "checkpoint" / "model")
    (base / "sft_corrupt" / "checkpoint" / "state.pt").write_bytes(b"PK\x03\x04 truncated")
    p["sft_corrupt"] = base / "sft_corrupt"
    (p["sft_corrupt"] / OWNER_FILE).write_text('{"script": "train_sft.py"}')
    return p


# ---- the cases: (id, script, args, what the one error line must contain) ---------------------------------

def sft(p, out, data="train", eval_="eval", api="api", *extra):
    return ["--data", str(p[data]), "--eval-data", str(p[eval_]), "--api-db", str(p[api]), "--out", str(out),
            "--batch-size", "8", "--vocab-size", "300", "--samples", "0", "--max-steps", "2", "--device", "cpu",
            *extra]


def rm(p, out, data="train", sft_="sft", *extra):
    return ["--sft", str(p[sft_]), "--data", str(p[data]), "--eval-data", str(p["eval"]), "--api-db", str(p["api"]),
            "--out", str(out), "--prompts", "8", "--k", "2", "--max-new-tokens", "24", "--device", "cpu", *extra]


def ppo(p, out, data="train", sft_="sft", rm_="rm", *extra):
    return ["--sft", str(p[sft_]), "--rm", str(p[rm_]), "--data", str(p[data]), "--eval-data", str(p["eval"]),
            "--api-db", str(p["api"]), "--out", str(out), "--iterations", "1", "--rollouts", "4",
            "--minibatch-size", "2", "--ppo-epochs", "1", "--max-new-tokens", "16", "--device", "cpu", *extra]


def ev(p, out, *extra):
    return ["--out", str(out), "--device", "cpu", "--workers", "1", *extra]


CASES = {
    # train_sft.py: every loader failure on --data, --eval-data and --api-db, and bad models/tokenizers
    "sft_missing_file": ("train_sft.py", lambda p, o: sft(p, o, "missing"),
                         ["does_not_exist.json", "no such file"]),
    "sft_empty_file": ("train_sft.py", lambda p, o: sft(p, o, "empty"), ["empty.json", "empty file"]),
    "sft_non_json_line": ("train_sft.py", lambda p, o: sft(p, o, "nonjson"),
                          ["nonjson.json:2:", "not valid JSON", "one JSON object"]),
    "sft_missing_field": ("train_sft.py", lambda p, o: sft(p, o, "missing_field"),
                          ["missing_field.json:2: field 'api_call': missing", "every APIBench line is"]),
    "sft_wrong_type": ("train_sft.py", lambda p, o: sft(p, o, "wrong_type"),
                       ["wrong_type.json:2: field 'api_data': expected object, got string"]),
    "sft_latin1": ("train_sft.py", lambda p, o: sft(p, o, "latin1"),
                   ["latin1.json:2: not valid UTF-8", "re-save the file as UTF-8"]),
    "sft_api_db_missing_key": ("train_sft.py", lambda p, o: sft(p, o, "train", "eval", "bad_api"),
                               ["bad_api.jsonl:1: field 'description': missing", "needs the keys"]),
    "sft_lossy_tokenizer": ("train_sft.py",
                            lambda p, o: sft(p, o, "train", "eval", "api", "--model", str(p["sft"] / "model"),
                                             "--tokenizer", str(p["lossy_tok"])),
                            ["lossy_tok", "decode(encode(text)) != text", "preserves"]),
    "sft_tokenizer_bigger_than_model": ("train_sft.py",
                                        lambda p, o: sft(p, o, "train", "eval", "api", "--model",
                                                         str(p["sft"] / "model"), "--tokenizer", str(p["big_tok"])),
                                        ["big_tok", "400 tokens, more than the model's vocabulary (306)",
                                         "the --tokenizer that belongs to --model"]),
    "sft_model_folder_without_model": ("train_sft.py",
                                       lambda p, o: sft(p, o, "train", "eval", "api", "--model", str(p["no_model"])),
                                       ["no_model_here"]),
    "sft_model_neither_kind": ("train_sft.py",
                               lambda p, o: sft(p, o, "train", "eval", "api", "--model", str(p["vision_model"]),
                                                "--tokenizer", str(p["sft"] / "model")),
                               ["vision_model: a 'clip_vision_model' model is neither seq2seq nor decoder-only"]),
    "sft_tokenizer_without_pad": ("train_sft.py",
                                  lambda p, o: sft(p, o, "train", "eval", "api", "--model", str(p["sft"] / "model"),
                                                   "--tokenizer", str(p["no_pad_tok"])),
                                  ["no_pad_tok", "has no pad token", "tok.pad_token = tok.eos_token"]),
    "sft_resume_corrupt_checkpoint": ("train_sft.py", lambda p, o: sft(p, p["sft_corrupt"], "train", "eval", "api",
                                                                       "--resume"),
                                      ["state.pt: not a readable checkpoint", "to start over"]),
    # train_rm.py
    "rm_sft_without_model": ("train_rm.py", lambda p, o: rm(p, o, "train", "no_model"),
                             ["no_model_here: no model found", "run the previous stage first"]),
    "rm_empty_data": ("train_rm.py", lambda p, o: rm(p, o, "empty"), ["empty.json", "empty file"]),
    "rm_bad_weights": ("train_rm.py", lambda p, o: rm(p, o, "train", "sft", "--weights", "api_fits=2,nonsense=3"),
                       ["--weights", "'nonsense=3' is not question_id=weight"]),
    # train_ppo.py
    "ppo_rm_other_vocabulary": ("train_ppo.py", lambda p, o: ppo(p, o, "train", "sft", "rm_other_vocab"),
                                ["rm_other_vocab: reward model vocabulary (333) differs", "train the RM from this SFT"]),
    "ppo_sft_without_model": ("train_ppo.py", lambda p, o: ppo(p, o, "train", "no_model"),
                              ["no_model_here: no model found"]),
    "ppo_rm_nan_normalisation": ("train_ppo.py", lambda p, o: ppo(p, o, "train", "sft", "rm_nan"),
                                 ["reward_norm.json: gain nan", "not finite"]),
    "ppo_resume_other_kl_controller": ("train_ppo.py", lambda p, o: ppo(p, p["ppo_adaptive"], "train", "sft", "rm",
                                                                        "--resume"),
                                       ["checkpoint", "adaptive", "--adaptive-kl"]),
    "ppo_missing_field": ("train_ppo.py", lambda p, o: ppo(p, o, "missing_field"),
                          ["missing_field.json:2: field 'api_call': missing"]),
    # evaluate.py
    "eval_question_id_beyond_eval_set": ("evaluate.py",
                                         lambda p, o: ev(p, o, "--responses", str(p["resp_beyond"]), "--eval-data",
                                                         str(p["eval"]), "--api-db", str(p["api"])),
                                         ["responses_beyond.jsonl:2: field 'question_id': 17 is not a line of",
                                          "(1..16)", "response file for that eval set"]),
    "eval_question_id_string": ("evaluate.py",
                                lambda p, o: ev(p, o, "--responses", str(p["resp_str_id"]), "--eval-data",
                                                str(p["eval"]), "--api-db", str(p["api"])),
                                ["responses_str.jsonl:1: field 'question_id': expected integer, got string"]),
    "eval_responses_latin1": ("evaluate.py",
                              lambda p, o: ev(p, o, "--responses", str(p["resp_latin1"]), "--eval-data",
                                              str(p["eval"]), "--api-db", str(p["api"])),
                              ["responses_latin1.jsonl:2: not valid UTF-8"]),
    "eval_responses_missing": ("evaluate.py",
                               lambda p, o: ev(p, o, "--responses", str(p["missing"]), "--eval-data",
                                               str(p["eval"]), "--api-db", str(p["api"])),
                               ["does_not_exist.json", "no such file"]),
    "eval_model_folder_without_model": ("evaluate.py",
                                        lambda p, o: ev(p, o, "--models", str(p["no_model"]), "--data",
                                                        str(p["train"]), "--eval-data", str(p["eval"]),
                                                        "--api-db", str(p["api"]), "--greedy", "--limit", "2"),
                                        ["no_model_here: no model found"]),
}


def run_script(script: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Run every case (3 at a time); each test then checks its own. Also snapshots the inputs that must
    not change (the SFT and reward-model folders, the corrupt checkpoints)."""
    p = build_inputs(tmp_path_factory.mktemp("bad_input"))
    keep = ["sft", "rm", "rm_other_vocab", "rm_nan", "ppo_adaptive", "sft_corrupt"]
    before = {k: snapshot(p[k]) for k in keep}
    outs = {name: p["base"] / "out" / name for name in CASES}

    def one(name):
        script, args, _ = CASES[name]
        return name, run_script(script, args(p, outs[name]))

    with ThreadPoolExecutor(max_workers=3) as pool:
        done = dict(pool.map(one, CASES))
    return {"p": p, "outs": outs, "done": done, "before": before, "keep": keep}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line_and_exit_2(results, name):
    script, _, needles = CASES[name]
    r = results["done"][name]
    assert r.returncode == 2, f"{script}: exit {r.returncode}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr[-3000:]  # one line, and the last word
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    out = results["outs"][name]
    for folder in (out, results["p"]["sft_corrupt"], results["p"]["ppo_adaptive"]):
        if folder.exists():
            assert not (folder / "model").exists(), f"{folder}/model was written"
            assert not list(folder.rglob("*.tmp")) and not list(folder.rglob("*.old")), list(folder.rglob("*"))
    if out.exists():
        assert not (out / "checkpoint").exists() and not (out / "samples.jsonl").exists(), list(out.iterdir())


@pytest.mark.slow
def test_inputs_of_failed_runs_are_untouched(results):
    """No failed run changed the folders it read: SFT, reward models, the checkpoints it could not use."""
    p = results["p"]
    for k in results["keep"]:
        assert snapshot(p[k]) == results["before"][k], k


@pytest.mark.slow
def test_question_ids_at_both_ends_of_the_eval_file_are_accepted(results, tmp_path):
    """The question-id check is not off by one: ids 1 and 16 of a 16-line eval file are accepted and scored."""
    p = results["p"]
    good = write_lines(tmp_path / "responses.jsonl",
                       [json.dumps({"question_id": i, "text": "import math\nprint(math.gcd(4, 6))"}) for i in (1, 16)])
    r = run_script("evaluate.py", ev(p, tmp_path / "eval", "--responses", str(good), "--eval-data", str(p["eval"]),
                                     "--api-db", str(p["api"])))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = (tmp_path / "eval" / "responses.examples.jsonl").read_text().splitlines()
    assert len(rows) == 2 and json.loads((tmp_path / "eval" / "summary.json").read_text())["results"]["responses"]


# ---- --out: a script writes only into a new or empty folder, or its own earlier run -----------------------

def _user_folder(path: Path, owner: str | None = None) -> Path:
    """A folder of the user's own files, with the names our scripts write (or another script's run folder)."""
    (path / "model").mkdir(parents=True)
    (path / "model" / "my_weights.bin").write_bytes(os.urandom(32))
    (path / "checkpoint").mkdir()
    (path / "checkpoint" / "keep.txt").write_text("keep me")
    (path / "args.json").write_text('{"mine": true}\n')
    for name in ("metrics.jsonl", "summary.json", "samples.jsonl", "sft.examples.jsonl", "notes.txt"):
        (path / name).write_text("the user's\n")
    if owner:
        (path / ".minirlaif-run.json").write_text(json.dumps({"script": owner}))
    return path


OUT_CASES = {  # name: (script, args for out, owner of the folder or None, what the error says)
    "sft_into_user_folder": ("train_sft.py", lambda p, o: sft(p, o), None, "files that train_sft.py did not write"),
    "rm_into_user_folder": ("train_rm.py", lambda p, o: rm(p, o), None, "files that train_rm.py did not write"),
    "ppo_into_user_folder": ("train_ppo.py", lambda p, o: ppo(p, o), None, "files that train_ppo.py did not write"),
    "eval_into_user_folder": ("evaluate.py", lambda p, o: ev(p, o, "--models", str(p["sft"]), "--data", str(p["train"]),
                                                           "--eval-data", str(p["eval"]), "--api-db", str(p["api"])),
                              None, "files that evaluate.py did not write"),
    "ppo_into_sft_run": ("train_ppo.py", lambda p, o: ppo(p, o), "train_sft.py", "the run of train_sft.py"),
    "sft_into_eval_run": ("train_sft.py", lambda p, o: sft(p, o), "evaluate.py", "the run of evaluate.py"),
}


@pytest.mark.slow
def test_out_folders_the_script_did_not_make_are_refused_untouched(results):
    p = results["p"]
    folders = {name: _user_folder(p["base"] / "user" / name, owner) for name, (_, _, owner, _) in OUT_CASES.items()}
    before = {name: snapshot(f) for name, f in folders.items()}

    def one(name):
        script, args, _, _ = OUT_CASES[name]
        return name, run_script(script, args(p, folders[name]))

    with ThreadPoolExecutor(max_workers=3) as pool:
        done = dict(pool.map(one, OUT_CASES))
    for name, (script, _, _, says) in OUT_CASES.items():
        r = done[name]
        assert r.returncode == 2 and "Traceback" not in r.stderr, (name, r.stderr[-2000:])
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: --out {folders[name]}: holds ") and says in last and "--overwrite" in last, last
        assert snapshot(folders[name]) == before[name], name  # nothing deleted, overwritten or added
        assert sorted(p.name for p in folders[name].iterdir()) == sorted(before_names(before[name])), name


def before_names(snap: dict[str, bytes]) -> set[str]:
    return {k.split("/")[0] for k in snap}


@pytest.mark.slow
def test_overwrite_replaces_only_the_scripts_outputs_and_reruns_need_no_flag(results, tmp_path):
    p = results["p"]
    out = _user_folder(tmp_path / "eval")
    responses = write_lines(tmp_path / "responses.jsonl",
                            [json.dumps({"question_id": 1, "text": "import math\nprint(math.gcd(4, 6))"})])
    args = ev(p, out, "--responses", str(responses), "--eval-data", str(p["eval"]), "--api-db", str(p["api"]))
    r = run_script("evaluate.py", args + ["--overwrite"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["results"]["responses"]  # replaced: its output
    assert (out / "notes.txt").read_text() == "the user's\n"  # not its output: stays
    assert (out / "model" / "my_weights.bin").exists() and (out / "checkpoint" / "keep.txt").exists()
    r = run_script("evaluate.py", args)  # its own run folder now: a rerun needs no flag
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.slow
def test_evaluate_survives_hostile_responses(results, tmp_path):
    """evaluate.py --exec-mode run on responses that attack the sandbox: a summary for every example, no
    traceback (a forged setup record and a deep folder used to kill the whole evaluation)."""
    p = results["p"]
    hostile = [
        # (no backslash inside the program: Gorilla response cleaning unescapes \n)
        "import os\nos.write(3, bytes([10]) + b'{\"setup_error\": \"forged\"}' + bytes([10]))\nos._exit(0)",
        "import os\nfor _ in range(1100):\n    os.mkdir('d')\n    os.chdir('d')\nprint('deep')",
        "import math\nprint(math.gcd(4, 6))",
    ]
    responses = write_lines(tmp_path / "responses.jsonl",
                            [json.dumps({"question_id": i + 1, "text": code}) for i, code in enumerate(hostile)])
    r = run_script("evaluate.py", ev(p, tmp_path / "eval", "--responses", str(responses), "--eval-data",
                                     str(p["eval"]), "--api-db", str(p["api"]), "--exec-mode", "run"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "eval" / "responses.examples.jsonl").read_text().splitlines()]
    assert [row["status"] for row in rows] == ["ok", "ok", "ok"]
