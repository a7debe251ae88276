"""Gorilla loaders: synthetic lines of every layout, error messages, round trip, and the real HF files."""

import json
import re

import pytest

from minirlaif.data import (
    APIRecord,
    clean_response_text,
    load_api_database,
    load_apibench,
    load_questions,
    load_responses,
    parse_code_text,
    unescape_gorilla_text,
    write_api_database,
    write_apibench,
)
from minirlaif.data.apibench import API_DB_KEYS
from minirlaif.errors import InputError


def api_data(domain="Natural Language Processing Translation", api_name="Helsinki-NLP/opus-mt-fr-en",
             api_call="pipeline('translation_fr_to_en', model='Helsinki-NLP/opus-mt-fr-en')"):
    return {
        "domain": domain, "framework": "Hugging Face Transformers", "functionality": "Translation",
        "api_name": api_name, "api_call": api_call, "api_arguments": ["text"],
        "python_environment_requirements": {"transformers": ">=4"}, "example_code": None,
        "performance": {"dataset": "N/A", "accuracy": "N/A"}, "description": "A model.",
    }


def line(code, api_call="pipeline('translation_fr_to_en', model='Helsinki-NLP/opus-mt-fr-en')",
         provider="Hugging Face Transformers", data=None):
    return json.dumps({"code": code, "api_call": api_call, "provider": provider, "api_data": data or api_data()})


def load_one(tmp_path, code, **kw):
    path = tmp_path / "bench.json"
    path.write_text(line(code, **kw) + "\n", encoding="utf-8")
    (record,) = load_apibench(path)
    return record


# ---------------------------------------------------------------------------------- layouts


def test_huggingface_layout_with_input(tmp_path):
    code = (
        "###Instruction: Translate this French review for our team.\n"
        "###Input: \"C'est bon\", she said.\n"
        "###Output: <<<domain>>>: Natural Language Processing Translation\n"
        "<<<api_call>>>: pipeline('translation_fr_to_en', model='Helsinki-NLP/opus-mt-fr-en')\n"
        "<<<api_provider>>>: Hugging Face Transformers\n"
        "<<<explanation>>>:1. Import pipeline.\n2. Translate the text.\n"
        "<<<code>>>: from transformers import pipeline\n"
        "translator = pipeline('translation_fr_to_en', model='Helsinki-NLP/opus-mt-fr-en')\n"
        "print(translator(text))\n"
    )
    r = load_one(tmp_path, code)
    assert r.instruction == "Translate this French review for our team."
    assert r.input == "\"C'est bon\", she said."
    assert r.explanation == "1. Import pipeline.\n2. Translate the text."
    assert r.code == (
        "from transformers import pipeline\n"
        "translator = pipeline('translation_fr_to_en', model='Helsinki-NLP/opus-mt-fr-en')\n"
        "print(translator(text))"
    )
    assert r.api_call == "pipeline('translation_fr_to_en', model='Helsinki-NLP/opus-mt-fr-en')"
    assert (r.domain, r.api_name, r.provider) == (
        "Natural Language Processing Translation", "Helsinki-NLP/opus-mt-fr-en", "Hugging Face Transformers")
    assert (r.source, r.line) == (str(tmp_path / "bench.json"), 1)
    assert r.extra["layout"] == "markers"
    assert r.extra["fields"]["api_provider"] == "Hugging Face Transformers"


def test_tensorflow_layout_comma_joined_markers_and_spaced_headers(tmp_path):
    url = "https://tfhub.dev/google/universal-sentence-encoder/4"
    code = (
        "### Instruction: Embed these sentences, please.\n"
        f"### Output: <<<domain>>>: Text embedding, <<<api_call>>>: hub.load('{url}'), "
        "<<<api_provider>>>: TensorFlow Hub, <<<explanation>>>: Load the model, then embed, "
        f"<<<code>>>: import tensorflow_hub as hub\nembed = hub.load('{url}')\nvectors = embed(['a', 'b'])"
    )
    r = load_one(tmp_path, code, api_call=f"hub.load('{url}')", provider="TensorFlow Hub",
                 data=api_data(domain="Text embedding", api_name="universal-sentence-encoder"))
    assert r.instruction == "Embed these sentences, please."  # commas inside a value are kept
    assert r.input == ""
    # The ", " before the next marker is a separator, not part of the value.
    assert r.extra["fields"]["domain"] == "Text embedding"
    assert r.extra["fields"]["api_call"] == f"hub.load('{url}')"
    assert r.explanation == "Load the model, then embed"
    assert r.code == f"import tensorflow_hub as hub\nembed = hub.load('{url}')\nvectors = embed(['a', 'b'])"


def test_torchhub_eval_layout_with_unescaped_quotes(tmp_path):
    code = (
        "###Instruction: Classify the actions in this video clip.\n"
        "###Output: {'domain': 'Video Classification', "
        "'api_call': 'model = torch.hub.load('facebookresearch/pytorchvideo', 'slow_r50', pretrained=True)', "
        "'api_provider': 'PyTorch', "
        "'explanation': 'Load the pretrained 'slow_r50' model, which classifies clips.', "
        # A literal backslash-n (no real newline): the program was written with escaped newlines.
        "'code': 'import torch\\nmodel = torch.hub.load('facebookresearch/pytorchvideo', 'slow_r50', pretrained=True)"
        "\\nmodel.eval()'}"
    )
    keyword_call = "torch.hub.load(repo_or_dir='facebookresearch/pytorchvideo', model='slow_r50', pretrained=True)"
    r = load_one(tmp_path, code, api_call=keyword_call, provider="PyTorch",
                 data=api_data(domain="Video Classification", api_name="slow_r50", api_call=keyword_call))
    assert r.instruction == "Classify the actions in this video clip."
    assert r.explanation == "Load the pretrained 'slow_r50' model, which classifies clips."
    assert r.code == (
        "import torch\n"
        "model = torch.hub.load('facebookresearch/pytorchvideo', 'slow_r50', pretrained=True)\n"
        "model.eval()"
    )
    assert r.api_call == keyword_call  # the gold is the top-level field, not the positional text
    assert r.extra["fields"]["api_call"] == (
        "model = torch.hub.load('facebookresearch/pytorchvideo', 'slow_r50', pretrained=True)")
    assert r.extra["fields"]["domain"] == "Video Classification"
    assert r.extra["layout"] == "dict"


def test_torchhub_code_with_real_newlines_keeps_literal_backslash_n():
    out = parse_code_text(
        "###Instruction: Print two lines.\n###Output: {'domain': 'Classification', "
        "'code': 'import torch\nprint(\"a\\nb\")'}"
    )
    assert out["fields"]["code"] == 'import torch\nprint("a\\nb")'


def test_torchhub_train_layout(tmp_path):
    code = (
        "{'Instruction': Detect objects in my photo, 'Input': 'a photo of a street', "
        "'Output': {'domain': 'Object Detection', "
        "'api_call': \"model = torch.hub.load('ultralytics/yolov5', 'yolov5s', pretrained=True)\", "
        "'api_provider': 'PyTorch', 'explanation': \"Load YOLOv5, then run it on the image.\", "
        "'code': 'import torch\nmodel = torch.hub.load(\\'ultralytics/yolov5\\', \\'yolov5s\\')\n"
        "config = {\\'size\\': 640}'}}"
    )
    r = load_one(tmp_path, code, provider="PyTorch",
                 api_call="torch.hub.load(repo_or_dir='ultralytics/yolov5', model='yolov5s', pretrained=True)")
    assert r.instruction == "Detect objects in my photo"
    assert r.input == "a photo of a street"
    assert r.explanation == "Load YOLOv5, then run it on the image."
    assert r.extra["fields"]["api_call"] == "model = torch.hub.load('ultralytics/yolov5', 'yolov5s', pretrained=True)"
    # The dict's two closing braces go, the program's own brace (inside the quotes) stays.
    assert r.code == (
        "import torch\nmodel = torch.hub.load(\\'ultralytics/yolov5\\', \\'yolov5s\\')\nconfig = {\\'size\\': 640}")


def test_records_without_code_are_kept_with_empty_code(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(
        line("###Instruction: We need to process biomedical text.") + "\n"
        + line("###Instruction: Translate 'hello' to French.\n###Output: \"Bonjour\"") + "\n"
        + line("###Instruction: Make a video.\n###Output: <<<domain>>>: Multimodal\n<<<explanation>>>: Not possible.")
        + "\n",
        encoding="utf-8",
    )
    records = load_apibench(path)
    assert [r.code for r in records] == ["", "", ""]
    assert [r.instruction for r in records] == [
        "We need to process biomedical text.", "Translate 'hello' to French.", "Make a video."]
    assert [r.extra["layout"] for r in records] == ["none", "plain", "markers"]
    assert records[1].extra["output"] == '"Bonjour"'
    assert records[2].explanation == "Not possible."


def test_only_the_first_output_header_starts_the_answer():
    out = parse_code_text(
        "###Instruction: Translate to German.\n###Input: Hi\n###Output: \"Hallo\"\n\n"
        "###Instruction: Summarize.\n###Input: Long text.\n###Output: Short."
    )
    assert (out["instruction"], out["input"], out["layout"]) == ("Translate to German.", "Hi", "plain")
    assert out["output"].startswith('"Hallo"') and out["output"].endswith("###Output: Short.")


def test_missing_final_newline_and_blank_lines_keep_physical_line_numbers(tmp_path):
    path = tmp_path / "bench.json"
    text = line("###Instruction: one") + "\n\n   \n" + line("###Instruction: two")  # no "\n" at the end
    path.write_text(text, encoding="utf-8")
    records = load_apibench(path)
    assert [(r.instruction, r.line) for r in records] == [("one", 1), ("two", 4)]


# ---------------------------------------------------------------------------------- errors


def test_non_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(line("###Instruction: ok") + "\n{'code': 'python dict, not JSON'}\n", encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(f"{path}:2:") + ".*not valid JSON"):
        load_apibench(path)


def test_json_that_is_not_an_object(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(f"{path}:1:") + " expected a JSON object, got array"):
        load_apibench(path)


def test_missing_key(tmp_path):
    path = tmp_path / "bench.json"
    obj = json.loads(line("###Instruction: ok"))
    del obj["provider"]
    path.write_text(json.dumps(obj) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(f"{path}:1: field 'provider': missing")):
        load_apibench(path)


def test_missing_domain_in_api_data(tmp_path):
    data = api_data()
    del data["domain"]
    path = tmp_path / "bench.json"
    path.write_text(line("###Instruction: ok", data=data) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(f"{path}:1: field 'domain': missing")):
        load_apibench(path)


def test_wrong_type(tmp_path):
    path = tmp_path / "bench.json"
    obj = json.loads(line("###Instruction: ok"))
    obj["api_call"] = 42
    path.write_text(line("###Instruction: ok") + "\n" + json.dumps(obj) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(f"{path}:2: field 'api_call': expected string, got integer")):
        load_apibench(path)


def test_unrecognised_code_layout(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(line("Just a program: print(1)") + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(f"{path}:1: field 'code': no '###Instruction:' header")):
        load_apibench(path)


def test_bad_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.json"
    good = line("###Instruction: ok").encode("utf-8")
    bad = line("###Instruction: café").encode("latin-1")  # ensure_ascii=True would hide it: write raw
    bad = bad.replace(b"caf\\u00e9", "café".encode("latin-1"))
    assert b"\xe9" in bad
    path.write_bytes(good + b"\n" + bad + b"\n")
    with pytest.raises(InputError, match=re.escape(f"{path}:2:") + " not valid UTF-8"):
        load_apibench(path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(str(path)) + ": empty file"):
        load_apibench(path)


def test_missing_path(tmp_path):
    for load in (load_apibench, load_api_database, load_questions, load_responses):
        with pytest.raises(InputError, match="no such file"):
            load(tmp_path / "nope.json")


def test_api_database_file_passed_to_load_apibench_gets_a_hint(tmp_path):
    path = tmp_path / "hub.json"
    path.write_text(json.dumps(api_data()) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="load_api_database"):
        load_apibench(path)


# ---------------------------------------------------------------------------------- folders, round trip


def test_folder_reads_apibench_files_in_sorted_order_and_skips_api_databases(tmp_path):
    (tmp_path / "b_eval.json").write_text(line("###Instruction: from b") + "\n", encoding="utf-8")
    (tmp_path / "a_train.jsonl").write_text(line("###Instruction: from a") + "\n", encoding="utf-8")
    (tmp_path / "hub_api.jsonl").write_text(json.dumps(api_data()) + "\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not data", encoding="utf-8")
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "other.jsonl").write_text("not even JSON\n", encoding="utf-8")
    records = load_apibench(tmp_path)
    assert [(r.instruction, r.source) for r in records] == [
        ("from a", str(tmp_path / "a_train.jsonl")), ("from b", str(tmp_path / "b_eval.json"))]
    with pytest.raises(InputError, match="no APIBench files"):
        load_apibench(tmp_path / "api")


def test_write_then_load_round_trip(tmp_path):
    records = [
        APIRecord(
            instruction="Translate this review.", api_call="pipeline('translation_fr_to_en')",
            domain="Natural Language Processing Translation", provider="Hugging Face Transformers",
            code="from transformers import pipeline\nt = pipeline('translation_fr_to_en')\nprint(t('Bonjour, ça va?'))",
            api_data=api_data(), source="x", line=0, input="Bonjour, ça va?",
            explanation="1. Import.\n2. Translate, then print.", api_name="Helsinki-NLP/opus-mt-fr-en",
        ),
        APIRecord(
            instruction="Classify clips.", api_call="torch.hub.load(repo_or_dir='a/b', model='c')",
            domain="Video Classification", provider="PyTorch", code="import torch",
            api_data=api_data(domain="Video Classification", api_name="c"), source="x", line=0, api_name="c",
        ),
    ]
    path = tmp_path / "out" / "bench.json"
    write_apibench(records, path)
    loaded = load_apibench(path)
    assert len(loaded) == 2
    for before, after, number in zip(records, loaded, (1, 2)):
        for name in ("instruction", "input", "api_call", "domain", "provider", "code", "explanation",
                     "api_data", "api_name"):
            assert getattr(after, name) == getattr(before, name), name
        assert (after.source, after.line) == (str(path), number)


# ---------------------------------------------------------------------------------- API database, eval data


def test_api_database_round_trip_and_validation(tmp_path):
    entries = [api_data(), api_data(domain="Text embedding", api_name="use", api_call="hub.load('u')")]
    entries[1]["api_arguments"] = None
    entries[1]["functionality"] = ["list", "value"]
    path = tmp_path / "api" / "x_api.jsonl"
    write_api_database(entries, path)
    assert load_api_database(path) == entries

    bad = dict(entries[0])
    del bad["performance"]
    path.write_text(json.dumps(entries[0]) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(f"{path}:2: field 'performance': missing")):
        load_api_database(path)
    path.write_text(json.dumps({**entries[0], "api_call": ["f()"]}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(f"{path}:1: field 'api_call': expected string, got array")):
        load_api_database(path)


def test_questions_and_responses_keep_text_raw(tmp_path):
    raw = ' Say \\"hi\\" in \\u00e7 style.\\n'  # backslashes as stored after json.loads
    q = tmp_path / "questions.jsonl"
    q.write_text(json.dumps({"question_id": 3, "text": raw, "category": "generic"}) + "\n", encoding="utf-8")
    assert load_questions(q) == [{"question_id": 3, "text": raw, "category": "generic"}]

    r = tmp_path / "responses.jsonl"
    r.write_text(json.dumps({"question_id": 3, "text": raw + '"'}) + "\n" + json.dumps({"question_id": 5}) + "\n",
                 encoding="utf-8")
    assert load_responses(r) == [{"question_id": 3, "text": raw + '"'}, {"question_id": 5}]

    for bad_id, problem in (('"3"', "expected integer, got string"), ("true", "expected integer, got boolean"),
                            ("0", "is 0")):
        q.write_text(f'{{"question_id": {bad_id}, "text": "x"}}\n', encoding="utf-8")
        with pytest.raises(InputError, match=re.escape(f"{q}:1: field 'question_id': {problem}")):
            load_questions(q)
    q.write_text('{"question_id": 1}\n', encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(f"{q}:1: field 'text': missing")):
        load_questions(q)


def test_unescape_gorilla_text():
    assert unescape_gorilla_text("a\\nb") == "a\nb"
    assert unescape_gorilla_text('say \\"hi\\" and \\\'bye\\\'') == "say \"hi\" and 'bye'"
    assert unescape_gorilla_text("one level: \\\\n") == "one level: \\n"  # escaped backslash, then a plain n
    assert unescape_gorilla_text("\\u00a1Esto\\u00e7") == "\u00a1Esto\u00e7"
    assert unescape_gorilla_text("emoji \\ud83d\\ude00!") == "emoji \U0001F600!"
    assert unescape_gorilla_text("lone \\ud83d.") == "lone \\ud83d."
    assert unescape_gorilla_text("regex \\d+ and tab \\t") == "regex \\d+ and tab \\t"


def test_clean_response_text():
    assert clean_response_text("<<<api_call>>>: f(\\\"x\\\")\\n\"") == '<<<api_call>>>: f("x")\n'
    assert clean_response_text("no stray quote\\n") == "no stray quote\n"
    assert clean_response_text('two quotes ""') == 'two quotes "'  # only one is dropped


# ---------------------------------------------------------------------------------- the real Gorilla files


@pytest.fixture(scope="module")
def hf_eval(gorilla):
    return load_apibench(gorilla / "apibench" / "huggingface_eval.json")


@pytest.mark.gorilla
def test_real_eval_file(gorilla, hf_eval):
    assert len(hf_eval) == 911
    assert [r.line for r in hf_eval] == list(range(1, 912))
    assert all(r.instruction for r in hf_eval)
    assert all(r.api_call == r.api_data["api_call"] for r in hf_eval)
    assert all(r.domain == r.api_data["domain"] for r in hf_eval)
    assert sum(bool(r.input) for r in hf_eval) == 56  # gorilla-format.md 2.1
    assert sum("api_call" in r.extra["fields"] for r in hf_eval) == 896  # gorilla-format.md 2.6

    # Independent scan of the raw text: a record has code exactly when its text has a <<<code>>> marker.
    with open(gorilla / "apibench" / "huggingface_eval.json", encoding="utf-8") as f:
        scanned = {n for n, raw in enumerate(f, start=1) if "<<<code>>>" not in json.loads(raw)["code"]}
    empty = {r.line for r in hf_eval if not r.code}
    # gorilla-format.md 2.7: no ###Output, plain answers, no <<<code>>>; plus 888 (two concatenated
    # translation/summary examples whose output is a plain answer).
    listed = {339, 414, 425, 800} | {41, 57, 58, 144, 390, 406, 693, 788, 880} \
        | {10, 104, 162, 179, 211, 382, 617, 772, 819} | {888}
    assert empty == scanned == listed

    first = hf_eval[0]
    assert first.instruction.startswith("Design a feature for a social media website")
    assert first.code == (
        "from transformers import AutoTokenizer, AutoModel\n"
        "tokenizer = AutoTokenizer.from_pretrained('princeton-nlp/unsup-simcse-roberta-base')\n"
        "model = AutoModel.from_pretrained('princeton-nlp/unsup-simcse-roberta-base')"
    )
    assert hf_eval[116].instruction == (  # line 117 has a spaced "### Instruction:" header
        "Our company wants to analyze sports content by detecting and classifying different sports in videos.")
    assert hf_eval[116].code.startswith("from transformers import VideoMAEImageProcessor, VideoMAEForPreTraining\n")
    assert hf_eval[887].instruction == (
        'Translate the following English sentence to German: "I have a doctor\'s appointment tomorrow morning."')


@pytest.mark.gorilla
def test_real_questions_match_eval_instructions(gorilla, hf_eval):
    questions = load_questions(gorilla / "eval-data" / "questions" / "huggingface" / "questions_huggingface_0_shot.jsonl")
    assert len(questions) == 904
    by_id = {q["question_id"]: q["text"] for q in questions}
    assert by_id[38] == (
        " Our business is expanding to international markets. Analyze the sentiment of the following customer "
        'review to better understand their satisfaction with our product: \\"\\u00a1Esto es maravilloso! '
        'Me encanta.\\"\\n###Input: \\"\\u00a1Esto es maravilloso! Me encanta.\\"\\n'
    )
    assert unescape_gorilla_text(by_id[38]) == (
        " Our business is expanding to international markets. Analyze the sentiment of the following customer "
        'review to better understand their satisfaction with our product: "¡Esto es maravilloso! Me encanta."\n'
        '###Input: "¡Esto es maravilloso! Me encanta."\n'
    )
    # gorilla-format.md 2.3: after one unescape, a question is its eval record's instruction (+ input).
    squash = lambda s: re.sub(r"\s+", "", s)  # noqa: E731
    for qid, text in by_id.items():
        instruction, _, input_ = unescape_gorilla_text(text).partition("###Input:")
        record = hf_eval[qid - 1]
        assert (squash(instruction), squash(input_)) == (squash(record.instruction), squash(record.input)), qid


@pytest.mark.gorilla
def test_real_api_database_and_responses(gorilla):
    database = load_api_database(gorilla / "api" / "huggingface_api.jsonl")
    assert len(database) == 936
    assert all(tuple(entry) == API_DB_KEYS for entry in database)
    assert database[0]["api_call"] == "AutoModel.from_pretrained('YituTech/conv-bert-base')"

    responses = load_responses(
        gorilla / "eval-data" / "responses" / "huggingface" / "response_huggingface_Gorilla_FT_0_shot.jsonl")
    assert len(responses) == 904
    ids = {r["question_id"] for r in responses}
    assert len(ids) == 904 and ids <= set(range(1, 912))
    assert set(range(1, 912)) - ids == {117, 150, 204, 339, 414, 425, 800}
    assert all(isinstance(r["text"], str) for r in responses)
    assert sum(r["text"].endswith('"') for r in responses) > 0.9 * len(responses)  # the stray quote


# ---------------------------------------------------------------------------------- bounded input


def test_folder_with_broken_and_looping_links_says_what_it_skipped(tmp_path, capsys):
    folder = tmp_path / "bench"
    folder.mkdir()
    (folder / "a_train.json").write_text(line("###Instruction: Translate.\n###Output: x = 1\n") + "\n")
    (folder / "b_train.json").symlink_to(tmp_path / "gone.json")
    (folder / "c_train.json").symlink_to(folder / "c_train.json")
    (folder / "d_train.json").symlink_to(tmp_path)
    assert len(load_apibench(folder)) == 1
    err = capsys.readouterr().err
    assert f"{folder / 'b_train.json'}: skipped, a broken symbolic link (its target {tmp_path / 'gone.json'}" in err
    assert f"{folder / 'c_train.json'}: skipped, a symbolic link that leads back to itself" in err
    assert f"{folder / 'd_train.json'}: skipped, a symbolic link to {tmp_path}, which is not a file" in err


def test_a_huge_line_is_refused_without_reading_the_file(tmp_path, monkeypatch):
    import tracemalloc

    from minirlaif import jsonl

    monkeypatch.setattr(jsonl, "MAX_LINE_BYTES", 1 << 20)  # the rule at a test's scale: 1 MiB
    path = tmp_path / "huge.json"
    path.write_text(line("###Instruction: a\n###Output: x = 1\n") + "\n" + "x" * (40 << 20) + "\n")
    tracemalloc.start()
    with pytest.raises(InputError, match=r"huge.json:2: line longer than 1 MiB"):
        load_apibench(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20  # the 40 MB line was never held
