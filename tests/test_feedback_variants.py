"""Variants (train_rm.py --arg-variants, --api-variants): one literal changed or the API swapped for another of its
domain, judged like any sample, and paired against the original when the score gap is over the margin: on training
prompts to train, on held-out prompts to measure."""

import ast
import io
import random
import tokenize

from minirlaif.feedback import AnalyzerJudge, Item, ScoredSample, label
from minirlaif.feedback.variants import (api_variant, api_variant_items, argument_variant, changed_literal,
                                        same_domain_alternatives, variant_items)
from test_feedback_analyzer import API_DB, RECORD


def tokens(program):
    return [(t.type, t.string) for t in tokenize.generate_tokens(io.StringIO(program).readline)]


PROGRAM = 'import math\n\na = 12\nb = 18\nname = "gcd: {}"\nprint(name.format(math.gcd(a, b)))\n'


def test_a_variant_changes_exactly_one_literal_and_stays_python():
    seen = set()
    for seed in range(40):
        variant = argument_variant(PROGRAM, random.Random(seed))
        ast.parse(variant)
        before, after = tokens(PROGRAM), tokens(variant)
        assert len(before) == len(after)
        diff = [(b, a) for b, a in zip(before, after) if b != a]
        assert len(diff) == 1, diff
        (kind, old), (kind_after, new) = diff[0]
        assert kind == kind_after and kind in (tokenize.NUMBER, tokenize.STRING) and old != new
        seen.add(old)
        assert argument_variant(PROGRAM, random.Random(seed)) == variant  # seeded
    assert seen == {"12", "18", '"gcd: {}"'}  # every literal gets its turn


def test_literals_that_cannot_change_and_programs_without_literals():
    rng = random.Random(0)
    assert changed_literal('""', rng) is None
    assert changed_literal("1j", rng) is None
    assert changed_literal('f"{x} cm"', rng) is None
    assert int(changed_literal("0", random.Random(3))) > 0  # never a negative literal
    assert argument_variant("import math\nprint(math.pi)\n", rng) is None
    assert argument_variant("print(1 +\n", rng) is None  # the tokenizer fails: no variant, no crash
    assert variant_items(["x = 1\n", "print(x)\n"], 2, 0) == [(0, v) for _, v in variant_items(["x = 1\n"], 2, 0)]


def test_the_analyzer_scores_a_variant_of_a_right_program_lower_on_the_arguments():
    program = "import math\nprint(math.gcd(12, 18))\n"  # right on every question (test_feedback_analyzer)
    variant = argument_variant(program, random.Random(0))
    judge = AnalyzerJudge(API_DB, hub="builtin", timeout_s=10)
    original, changed = label(judge, [Item(RECORD.instruction, RECORD.api_data, p, RECORD) for p in (program, variant)],
                              progress=False)
    args = [next(a.p_good for a in fb.answers if a.question_id == "api_args") for fb in (original, changed)]
    assert args == [1.0, 0.0]
    assert original.score > changed.score


def test_variant_pairs_over_the_margin_train_on_training_prompts_and_measure_on_held_out_ones():
    import train_rm

    cfg = train_rm.Config(heldout_fraction=0.5, margin=0.1, pair_strategy="all")
    samples = [ScoredSample(f"prompt {i}", f"program {i}", 1.0) for i in range(4)]
    variants = [(s, ScoredSample(s.prompt, s.response + " changed", score)) for s in samples for score in (0.5, 0.95)]
    train, test, train_pairs, test_pairs, test_variant_pairs = train_rm.split_and_pair(samples, variants, cfg, None)
    train_prompts = {s.prompt for s in train}
    assert len(train_prompts) == 2 and not test_pairs
    expected = sorted((s.prompt, s.response, s.response + " changed") for s in samples)  # gap 0.05: none
    assert sorted((p.prompt, p.chosen, p.rejected) for p in train_pairs) == [e for e in expected if e[0] in train_prompts]
    assert sorted((p.prompt, p.chosen, p.rejected) for p in test_variant_pairs) == [
        e for e in expected if e[0] not in train_prompts]
    assert all(p.chosen_score == 1.0 and p.rejected_score == 0.5 for p in train_pairs + test_variant_pairs)


def test_an_api_variant_swaps_the_api_for_another_of_its_domain_and_module_only():
    assert same_domain_alternatives(API_DB, API_DB[0]) == ["math.lcm"]  # statistics.mean: another domain
    other_module = {**API_DB[2], "domain": "Number theory", "api_name": "statistics.gcd"}
    assert same_domain_alternatives(API_DB + [other_module], API_DB[0]) == ["math.lcm"]  # imports would break
    program = "import math\nresult = math.gcd(12, 18)\nprint(result, mymath.gcd, math.gcd_table)\n"
    assert api_variant(program, "math.gcd", ["math.lcm"], random.Random(0)) == (
        "import math\nresult = math.lcm(12, 18)\nprint(result, mymath.gcd, math.gcd_table)\n")  # whole names only
    assert api_variant("print(1)\n", "math.gcd", ["math.lcm"], random.Random(0)) is None
    assert api_variant(program, "math.gcd", [], random.Random(0)) is None
    apis = [("math.gcd", ["math.lcm"]), ("math.gcd", [])]
    assert api_variant_items([program, program], apis, 3, 0) == [(0, program.replace("math.gcd(", "math.lcm("))]


def test_variant_stage_judges_both_kinds_and_pairs_them_with_their_original(tmp_path):
    """The wiring in train_rm: the right program gives an argument variant (api_args lost) and an API variant
    (api_fits and api_args lost), each scored by the judge below the original; a program whose API does not fit
    gives neither."""
    import types

    import train_rm
    from minirlaif.feedback import FeedbackCache, parse_weights

    judge = AnalyzerJudge(API_DB, hub="builtin", timeout_s=10)
    right, wrong_api = "import math\nprint(math.gcd(12, 18))\n", "import statistics\nprint(statistics.mean([12, 18]))\n"
    weights = parse_weights("api_fits=3,api_args=3")
    feedbacks = label(judge, [Item(RECORD.instruction, RECORD.api_data, p, RECORD) for p in (right, wrong_api)],
                      weights=weights, progress=False)
    samples = [ScoredSample(RECORD.instruction, p, fb.score, fb, {"index": 0}) for p, fb in zip((right, wrong_api), feedbacks)]
    cfg = train_rm.Config(arg_variants=1, api_variants=2, judge_workers=1)
    cache = FeedbackCache(tmp_path / "cache.jsonl")
    pairs = train_rm.variant_stage(cfg, judge, types.SimpleNamespace(api_database=API_DB), [RECORD], samples,
                                   weights, cache)
    cache.close()
    assert [(s.response, v.meta["variant"]) for s, v in pairs] == [(right, True), (right, True)]
    arg_variant, swapped = (v for _, v in pairs)
    assert swapped.response == right.replace("math.gcd", "math.lcm")  # one alternative: the second draw repeats it
    lost = [{a.question_id for a in v.feedback.answers if a.p_good < 0.5} for v in (arg_variant, swapped)]
    assert lost == [{"api_args"}, {"api_fits", "api_args"}]
    assert samples[0].score > arg_variant.score > swapped.score
