"""Value-swap augmentation (train_sft.py --value-swap): numbers shared by the instruction and the program change
together, nothing else changes, and the choice of records is seeded."""

import ast
import random
import re

from minirlaif.data.augment import swap_numbers, value_swapped
from minirlaif.data.records import APIRecord

INSTRUCTION = "Find the weekday index for day 25 of month 11 in 2033, with 0 for Monday."
PROGRAM = "import calendar\n\nyear = 2033\nmonth = 11\nday = 25\nresult = calendar.weekday(year, month, day)\nprint(result)"


def numbers(text):
    return re.findall(r"\d+", text)


def test_shared_numbers_change_together_and_nothing_else_does():
    for seed in range(30):
        instruction, program = swap_numbers(INSTRUCTION, PROGRAM, random.Random(seed))
        ast.parse(program)
        year, month, day = (re.search(rf"^{name} = (\d+)$", program, re.M).group(1) for name in ("year", "month", "day"))
        # the instruction says the program's new values where it said the old ones
        assert instruction == f"Find the weekday index for day {day} of month {month} in {year}, with 0 for Monday."
        assert program.replace(f"= {year}\n", "= 2033\n").replace(f"= {month}\n", "= 11\n").replace(
            f"= {day}\n", "= 25\n") == PROGRAM or len({year, month, day}) < 3  # a draw may repeat a value


def test_the_same_old_number_gets_the_same_new_one_in_one_pass():
    instruction, program = swap_numbers("Which 2 elements of [9, 2, 5] are the biggest?",
                                        "n = 2\nnums = [9, 2, 5]\nprint(n, nums)", random.Random(3))
    n = re.search(r"n = (\d+)", program).group(1)
    nums = re.search(r"nums = \[(.*)\]", program).group(1)
    assert instruction == f"Which {n} elements of [{nums}] are the biggest?"
    assert nums.split(", ")[1] == n  # the 2 in the list is the same old number as n


def test_numbers_only_in_one_of_the_two_and_parts_of_words_stay():
    instruction, program = "Round 3.5 to 1 place, file v2 of 7.", "x = 3.5\nplaces = 1\nname = 'v2'\nprint(round(x, places), 8)"
    new_instruction, new_program = swap_numbers(instruction, program, random.Random(0))
    assert numbers(new_instruction)[:3] == ["3", "5", numbers(new_program)[2]]  # 3.5 is a float: left alone
    assert "v2" in new_instruction and " 7." in new_instruction and ", 8)" in new_program
    assert swap_numbers("No numbers here.", program, random.Random(0)) == ("No numbers here.", program)
    assert swap_numbers(INSTRUCTION, "print(1 +\n", random.Random(0)) == (INSTRUCTION, "print(1 +\n")


def test_value_swapped_is_seeded_and_keeps_the_rest():
    records = [APIRecord(INSTRUCTION, "calendar.weekday(year, month, day)", "Dates", "Python", PROGRAM, {}, "t", i)
               for i in range(40)]
    once, again = value_swapped(records, 0.5, 0), value_swapped(records, 0.5, 0)
    assert once == again and value_swapped(records, 0.5, 1) != once
    changed = [a.line for a, b in zip(once, records) if a != b]
    assert 8 < len(changed) < 32  # about half
    assert [r.line for r in once] == list(range(40)) and value_swapped(records, 0.0, 0) == records
    assert all(a.api_call == b.api_call and a.api_data == b.api_data for a, b in zip(once, records))
