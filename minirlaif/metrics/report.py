"""All metrics for one set of responses at once: the numbers of one column of evaluate.py's table."""

from __future__ import annotations

from statistics import mean

from minirlaif.metrics.ast_match import api_index, as_gorilla_response, ast_match
from minirlaif.metrics.codebleu import codebleu
from minirlaif.metrics.executability import executability
from minirlaif.metrics.rouge import rouge_l

# Responses and programs are scored on their first MAX_SCORED_CHARS characters, so that the time per
# example is bounded: CodeBLEU's dataflow step is superlinear. A call chain `x.f(x).f(x)...` took 0.3 s
# at 8,000 characters and 2.2 s at 20,000 (bench/codebleu_long_programs.py, idle 2-core VM); issue 12
# reported a 10 MB response busy for over 240 s. Generated programs are far shorter (128 tokens); an
# example that was cut says so in its record ("truncated_from").
MAX_SCORED_CHARS = 8_000

# Table rows, in order: (key in the summary, label)
ROWS = [
    ("ast_accuracy", "AST accuracy (Gorilla: domain)"),
    ("exact_api", "exact API match"),
    ("args_match", "API + arguments match"),
    ("hallucination", "hallucination"),
    ("rouge_l", "ROUGE-L (code tokens)"),
    ("codebleu", "CodeBLEU (package-compatible)"),
    ("codebleu_strict", "CodeBLEU (strict)"),
    ("ngram_match", "  BLEU-4"),
    ("weighted_ngram_match", "  weighted n-gram"),
    ("syntax_match", "  syntax match"),
    ("dataflow_match", "  dataflow match"),
    ("executability", "executability rate"),
]


def score_responses(responses: list[str], programs: list[str], records: list, api_database: list[dict],
                    hub: str, exec_mode: str = "run", workers: int | None = None,
                    timeout_s: float = 5.0, ours: bool = False) -> tuple[dict, list[dict]]:
    """(summary, per-example rows). AST matching reads `responses` (raw text, as Gorilla does; with
    `ours`, our models' outputs, through as_gorilla_response: TorchHub's rule needs an api_call marker);
    ROUGE-L, CodeBLEU and executability read `programs`. Examples without a reference program count
    for AST and executability but not for ROUGE-L / CodeBLEU. Both are cut at MAX_SCORED_CHARS."""
    lengths = [max(len(r), len(p)) for r, p in zip(responses, programs)]
    responses = [r[:MAX_SCORED_CHARS] for r in responses]
    programs = [p[:MAX_SCORED_CHARS] for p in programs]
    index = api_index(api_database, hub)
    matches = [ast_match(as_gorilla_response(r, hub) if ours else r, rec, index, hub)
               for r, rec in zip(responses, records)]
    with_ref = [i for i, rec in enumerate(records) if rec.code.strip()]
    rouges = {i: rouge_l(records[i].code, programs[i]) for i in with_ref}
    cb = codebleu([records[i].code for i in with_ref], [programs[i] for i in with_ref]) if with_ref else {}
    runs = executability(programs, exec_mode, api_database, hub, workers=workers, timeout_s=timeout_s)
    n = max(len(responses), 1)
    summary = {
        "n": len(responses),
        "ast_accuracy": sum(m.correct for m in matches) / n,
        "exact_api": sum(m.exact_api for m in matches) / n,
        "args_match": sum(m.args_match for m in matches) / n,
        "hallucination": sum(m.hallucination for m in matches) / n,
        "rouge_l": mean(rouges.values()) if rouges else float("nan"),
        **{k: cb.get(k, float("nan")) for k in ("codebleu", "codebleu_strict", "ngram_match",
                                               "weighted_ngram_match", "syntax_match", "dataflow_match")},
        "executability": sum(r["ok"] for r in runs) / n,
        "exec_mode": exec_mode,
    }
    rows = []
    for i, (rec, resp, prog, m, run) in enumerate(zip(records, responses, programs, matches, runs)):
        rows.append({
            "source": rec.source, "line": rec.line, "instruction": rec.instruction, "reference": rec.code,
            "response": resp, "program": prog, "ast_correct": m.correct, "exact_api": m.exact_api,
            "hallucination": m.hallucination, "matched_api": (m.matched or {}).get("api_name"),
            "rouge_l": rouges.get(i), "executable": run["ok"], "status": run["status"], "error": run["error"],
            "truncated_from": lengths[i] if lengths[i] > MAX_SCORED_CHARS else None,
        })
    return summary, rows
