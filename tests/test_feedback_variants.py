"""Argument variants (train_rm.py --arg-variants): one literal changed, generic Python, judged like any sample,
and paired against its original only for training prompts with a score gap over the margin."""

import ast
import io
import random
import tokenize

from minirlaif.feedback import AnalyzerJudge, Item, ScoredSample, label
from minirlaif.feedback.variants import argument_variant, changed_literal, variant_items
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
