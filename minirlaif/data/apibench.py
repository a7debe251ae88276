"""Reading and writing Gorilla APIBench files (JSON Lines; see shared/docs/gorilla-format.md)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

from minirlaif.data.records import APIRecord
from minirlaif.jsonl import json_type as _json_type, read_jsonl, write_jsonl_atomic
from minirlaif.errors import InputError, where

API_DB_KEYS = (
    "domain", "framework", "functionality", "api_name", "api_call", "api_arguments",
    "python_environment_requirements", "example_code", "performance", "description",
)


def format_code_text(record: APIRecord) -> str:
    """The HuggingFace-layout `code` text of a record: instruction, optional input, marked output."""
    text = f"###Instruction: {record.instruction}"
    if record.input:
        text += f"\n###Input: {record.input}"
    text += (
        f"\n###Output: <<<domain>>>: {record.domain}\n<<<api_call>>>: {record.api_call}"
        f"\n<<<api_provider>>>: {record.provider}\n<<<explanation>>>: {record.explanation}"
        f"\n<<<code>>>: {record.code}"
    )
    return text


def write_apibench(records: Iterable[APIRecord], path: str | Path) -> None:
    """Write records as a Gorilla APIBench file (keys code, api_call, provider, api_data), atomically."""
    rows = (
        {"code": format_code_text(r), "api_call": r.api_call, "provider": r.provider, "api_data": r.api_data}
        for r in records
    )
    write_jsonl_atomic(rows, Path(path))


def write_api_database(entries: Iterable[dict], path: str | Path) -> None:
    """Write API documentation records (the 10 Gorilla keys, in order) as JSON Lines, atomically."""
    rows = []
    for i, entry in enumerate(entries):
        missing = [k for k in API_DB_KEYS if k not in entry]
        if missing:
            raise ValueError(f"API database entry {i} lacks keys {missing}")
        rows.append({k: entry[k] for k in API_DB_KEYS})
    write_jsonl_atomic(rows, Path(path))


# ----------------------------------------------------------------------------------------------
# Reading JSON Lines
#
# Every Gorilla file is JSON Lines, the `.json` ones included (gorilla-format.md section 0): read with
# minirlaif.jsonl.read_jsonl, the reader every file of ours goes through.

_NO_SUCH_PATH = "no such file or folder (check the path, or set MINIRLAIF_GORILLA for the Gorilla files)"
# API-database values the evaluator reads as text; the other keys hold mixed JSON types in real files.
_API_DB_STR_KEYS = ("domain", "framework", "api_name", "api_call", "description")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{where(path)}: {_NO_SUCH_PATH}")
    if path.is_dir():
        raise InputError(f"{where(path)}: is a folder (pass one JSON Lines file)")


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """minirlaif.jsonl.read_jsonl for a data file: it must exist and hold at least one object."""
    _check_file(path)
    found = False
    for number, obj in read_jsonl(path):
        found = True
        yield number, obj
    if not found:
        raise InputError(f"{where(path)}: empty file, no JSON lines (pass a JSON Lines file with one object per line)")


def _require(obj: dict, key: str, kind: type, path: Path, line: int, fix: str) -> Any:
    """obj[key], checked to exist and be of JSON type `kind` (bool is not accepted as an integer)."""
    if key not in obj:
        raise InputError(f"{where(path, line, key)}: missing ({fix})")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(
            f"{where(path, line, key)}: expected {_json_type(kind())}, got {_json_type(value)} ({fix})"
        )
    return value


# ----------------------------------------------------------------------------------------------
# Parsing the `code` text of an APIBench record (gorilla-format.md sections 2.1 and 2.6)

# `###Instruction:`, `### Instruction`, `##input:` ... Only spaces/tabs may sit between the hashes and
# the word: with \s a code comment like "##\n\ninput_features = ..." (HF line 236) would match.
_HEADER = re.compile(r"#{2,3}[ \t]*(instruction|input|output)\b[ \t]*:?", re.IGNORECASE)
# TorchHub train: {'Instruction': ..., 'Input': ..., 'Output': {...}}
_DICT_HEADER = re.compile(r"(?:^\s*\{|,)\s*'(Instruction|Input|Output)'\s*:", re.IGNORECASE)
# HF / TF output fields: <<<domain>>>: ... <<<api_call>>>: ...
_MARKER = re.compile(r"<<<[ \t]*(\w+)[ \t]*>>>[ \t]*:?")
# TorchHub output fields: {'domain': ..., 'api_call': ...}; responses sometimes escape the quotes.
_DICT_KEY = re.compile(r"""(?:\{|,)\s*\\*['"](domain|api_call|api_provider|explanation|code)\\*['"]\s*:""")


def _split_sections(matches: list[re.Match], text: str) -> dict[str, tuple[str, bool]]:
    """{name: (text up to the next match, is it the last section?)}; the first occurrence of a name wins."""
    out: dict[str, tuple[str, bool]] = {}
    for i, m in enumerate(matches):
        is_last = i + 1 == len(matches)
        end = len(text) if is_last else matches[i + 1].start()
        out.setdefault(m.group(1).lower(), (text[m.end():end], is_last))
    return out


def _unquote(value: str) -> str:
    """Strip one layer of matching quotes, plain ('x') or escaped (\\'x\\')."""
    for q in ("\\'", '\\"', "'", '"'):
        if len(value) >= 2 * len(q) and value.startswith(q) and value.endswith(q):
            return value[len(q):-len(q)]
    return value


def parse_code_text(text: str) -> dict[str, Any]:
    """Split an APIBench `code` text into instruction, input, output and the output's fields.

    Rules (gorilla-format.md 2.6):
    * Sections: headers `###Instruction:` / `###Input:` / `###Output:` (2-3 hashes, any case, optional
      spaces, optional colon). Without such headers, the TorchHub-train layout
      `{'Instruction': ..., ['Input': ...,] 'Output': {...}}`. Everything after the FIRST Output header
      is the output, even if it contains further headers (HF lines 50, 560, 888 do). Before it, the
      first Instruction and the first Input section are used. No Instruction section -> ValueError.
    * Output fields: if the output has `<<<name>>>:` markers, each field runs to the next marker and
      the separator before that marker (newline in HF, `, ` in TF) is dropped. Otherwise, if it has
      the known dict keys ('domain', 'api_call', 'api_provider', 'explanation', 'code'), each value
      runs to the next key, and we strip the trailing `,`, the closing `}` (last value only) and one
      layer of quotes; never literal_eval, as the quotes inside are not escaped. Otherwise the output
      is a plain answer with no fields.
    * TorchHub dict layout only: a `code` value with no real newline but a literal backslash-n was
      written with escaped newlines, so each backslash-n becomes a newline. A code value that already
      has real newlines is left alone: there a backslash-n is part of the program (e.g. print("a\\nb")).

    Returns {"instruction", "input", "output", "layout", "fields"}: strings stripped of surrounding
    whitespace; layout is "markers", "dict", "plain" (output without fields) or "none" (no output);
    fields maps each field name found (lower case) to its value.
    """
    headers = list(_HEADER.finditer(text))
    if headers:
        # The answer is everything after the first Output header; the sections before it are the prompt.
        n_prompt = next((i for i, m in enumerate(headers) if m.group(1).lower() == "output"), len(headers))
        has_output = n_prompt < len(headers)
        prompt_end = headers[n_prompt].start() if has_output else len(text)
        output = text[headers[n_prompt].end():] if has_output else ""
        sections = {name: value for name, (value, _) in _split_sections(headers[:n_prompt], text[:prompt_end]).items()}
    else:
        # TorchHub train: the prompt parts are dict-like values (the instruction usually unquoted).
        sections = {
            name: value if name == "output" else _unquote(value.strip().removesuffix(",").strip())
            for name, (value, _) in _split_sections(list(_DICT_HEADER.finditer(text)), text).items()
        }
        output = sections.get("output", "")
    if "instruction" not in sections:
        raise ValueError("no '###Instruction:' header and no {'Instruction': ...} layout")
    instruction, input_ = sections["instruction"], sections.get("input", "")

    output = output.strip()
    fields: dict[str, str] = {}
    markers = list(_MARKER.finditer(output))
    keys = [] if markers else list(_DICT_KEY.finditer(output))
    if markers:
        layout = "markers"
        for name, (value, is_last) in _split_sections(markers, output).items():
            value = value.strip()
            fields[name] = value if is_last else value.removesuffix(",").rstrip()
    elif keys:
        layout = "dict"
        for name, (value, is_last) in _split_sections(keys, output).items():
            value = value.strip()
            if is_last:
                value = value.rstrip("}").rstrip()  # the closing brace(s) of the dict(s)
            fields[name] = _unquote(value.removesuffix(",").strip())
        code = fields.get("code", "")
        if "\n" not in code and "\\n" in code:
            fields["code"] = code.replace("\\n", "\n")
    else:
        layout = "plain" if output else "none"
    return {"instruction": instruction.strip(), "input": input_.strip(), "output": output,
            "layout": layout, "fields": fields}


# ----------------------------------------------------------------------------------------------
# Loaders


def _apibench_files(folder: Path) -> list[Path]:
    """APIBench files of a folder: rule in load_apibench's docstring."""
    if folder.resolve().name == "api":
        return []
    files = []
    for p in sorted(folder.iterdir()):
        if p.suffix not in (".json", ".jsonl") or p.stem.endswith("_api"):
            continue
        if p.is_file():
            files.append(p)
        elif p.is_symlink():  # a link we cannot follow: the user meant this file, so say why it is left out
            print(f"warning: {p}: skipped, {_unfollowable(p)}", file=sys.stderr)
    return files


def _unfollowable(link: Path) -> str:
    """Why the symbolic link `link` leads to no file."""
    try:
        target = link.resolve(strict=True)
    except FileNotFoundError:
        return f"a broken symbolic link (its target {os.readlink(link)} does not exist)"
    except (RuntimeError, OSError) as e:  # Python 3.11 raises RuntimeError for a loop, 3.13 OSError(ELOOP)
        return f"a symbolic link that leads back to itself ({e})"
    return f"a symbolic link to {target}, which is not a file"


def load_apibench(path: str | Path) -> list[APIRecord]:
    """Read APIBench instruction/answer records from a file, or from every APIBench file of a folder.

    Folder rule: the `*.json` and `*.jsonl` files directly in the folder, in sorted name order,
    except API-database files (name ending in `_api.json`/`_api.jsonl`, or a folder named `api`).
    Sub-folders are not entered, so pass `gorilla/apibench`, not `gorilla/` (whose `api/` and
    `eval-data/` hold other formats).

    Each line needs `code`, `api_call`, `provider` (strings) and `api_data` (an object with string
    `domain` and `api_name`). The gold call is the top-level `api_call`; `domain` and `api_name` come
    from `api_data`; `line` is the physical line number (= Gorilla's question_id). The `code` text is
    split by `parse_code_text`; a record whose output has no code section (no output, a plain answer,
    no `<<<code>>>`) is kept with code="". `extra` holds the text's "layout", its raw "output" and the
    parsed output "fields" (e.g. the positional torch.hub.load call of TorchHub texts).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{where(path)}: {_NO_SUCH_PATH}")
    files = _apibench_files(path) if path.is_dir() else [path]
    if not files:
        raise InputError(
            f"{where(path)}: no APIBench files (*.json/*.jsonl, not *_api.jsonl) in this folder "
            "(pass a file or the apibench/ folder; read API databases with load_api_database)"
        )
    records = []
    for file in files:
        for number, obj in _read_jsonl(file):
            records.append(_apibench_record(obj, file, number))
    return records


def _apibench_record(obj: dict, path: Path, line: int) -> APIRecord:
    fix = "every APIBench line is {\"code\": str, \"api_call\": str, \"provider\": str, \"api_data\": {...}}"
    if "code" not in obj and all(k in obj for k in API_DB_KEYS):
        raise InputError(f"{where(path, line, 'code')}: missing; this looks like an API database line "
                         "(read it with load_api_database, or pass the apibench file instead)")
    code_text = _require(obj, "code", str, path, line, fix)
    api_call = _require(obj, "api_call", str, path, line, fix)
    provider = _require(obj, "provider", str, path, line, fix)
    api_data = _require(obj, "api_data", dict, path, line, fix)
    data_fix = "api_data is the gold API's documentation record, with the 10 keys of api/*_api.jsonl"
    domain = _require(api_data, "domain", str, path, line, data_fix)
    api_name = _require(api_data, "api_name", str, path, line, data_fix)
    try:
        parsed = parse_code_text(code_text)
    except ValueError as e:
        raise InputError(f"{where(path, line, 'code')}: {e} "
                         "(start the text with '###Instruction: ...' and put the answer after '###Output:')") from None
    return APIRecord(
        instruction=parsed["instruction"], api_call=api_call, domain=domain, provider=provider,
        code=parsed["fields"].get("code", ""), api_data=api_data, source=str(path), line=line,
        input=parsed["input"], explanation=parsed["fields"].get("explanation", ""), api_name=api_name,
        extra={"layout": parsed["layout"], "output": parsed["output"], "fields": parsed["fields"]},
    )


def load_api_database(path: str | Path) -> list[dict]:
    """Read an API database (`api/{hub}_api.jsonl`) in file order; the order matters to the AST metric.

    Every line must have the 10 keys of API_DB_KEYS; `domain`, `framework`, `api_name`, `api_call`
    and `description` must be strings, the other values may be of any JSON type (they are mixed in
    the real files). Entries are returned as read (extra keys kept).
    """
    path = Path(path)
    fix = f"every API database line needs the keys {', '.join(API_DB_KEYS)}"
    entries = []
    for number, obj in _read_jsonl(path):
        for key in API_DB_KEYS:
            _require(obj, key, str if key in _API_DB_STR_KEYS else object, path, number, fix)
        entries.append(obj)
    return entries


def _load_eval_lines(path: str | Path, what: str, require_text: bool) -> list[dict]:
    path = Path(path)
    fix = f"every {what} line needs an integer question_id >= 1 (a 1-based line of apibench/<hub>_eval.json)"
    rows = []
    for number, obj in _read_jsonl(path):
        qid = _require(obj, "question_id", int, path, number, fix)
        if qid < 1:
            raise InputError(f"{where(path, number, 'question_id')}: is {qid} ({fix})")
        if require_text or "text" in obj:
            _require(obj, "text", str, path, number, f"every {what} line needs a string text")
        rows.append(obj)
    return rows


def load_questions(path: str | Path) -> list[dict]:
    """Read a Gorilla questions file (`eval-data/questions/...`): dicts with question_id, text, category.

    `text` is kept raw, exactly as stored (still escaped: literal backslash-n, backslash-quote, \\uXXXX),
    because Gorilla prompts the model with it as is; use unescape_gorilla_text to read it as prose.
    Needs an integer question_id >= 1 and a string text on every line; lines are kept in file order.
    """
    return _load_eval_lines(path, "questions", require_text=True)


def load_responses(path: str | Path) -> list[dict]:
    """Read a Gorilla responses file (`eval-data/responses/...`): dicts with question_id, text, ...

    `text` is kept raw, exactly as stored, because Gorilla's AST scoring cuts the API call out of the
    escaped text. Needs an integer question_id >= 1 on every line. A line may lack `text`: Gorilla's
    scorer skips it but still counts it in the denominator, so we keep it (if present it must be a string).
    """
    return _load_eval_lines(path, "responses", require_text=False)


# ----------------------------------------------------------------------------------------------
# Undoing Gorilla's escaping (gorilla-format.md 2.6 step 5)

# A surrogate pair first, so the two halves of an emoji become one character; then any \uXXXX;
# then a backslash before n, a quote or a backslash. Matching left to right is what makes this ONE
# level: in "\\n" the first two characters are an escaped backslash, and the n stays an n.
_ESCAPE = re.compile(
    r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})|\\u([0-9a-f]{4})|\\([n\"'\\])", re.IGNORECASE
)


def _unescape_one(m: re.Match) -> str:
    high, low, code, char = m.groups()
    if high:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00))
    if code:
        value = int(code, 16)
        # A lone surrogate is no character and could not be written as UTF-8: keep its escape.
        return m.group(0) if 0xD800 <= value <= 0xDFFF else chr(value)
    return "\n" if char == "n" else char


def unescape_gorilla_text(text: str) -> str:
    """Undo one level of escaping in a Gorilla question/response text.

    Backslash-n -> newline, backslash-quote (" or ') -> quote, double backslash -> one backslash,
    \\uXXXX -> that character, with a \\uD8xx\\uDCxx surrogate pair -> one character. Any other
    backslash sequence (e.g. \\d in a regex, \\t) is left as is; a lone surrogate keeps its escape.
    """
    return _ESCAPE.sub(_unescape_one, text)


def clean_response_text(text: str) -> str:
    """A Gorilla response as prose: unescape_gorilla_text, then drop one trailing `"` if there is one.

    About 95% of Gorilla's responses end with a stray quote left over from generation.
    """
    text = unescape_gorilla_text(text)
    return text[:-1] if text.endswith('"') else text
