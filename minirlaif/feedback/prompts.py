"""The judge's prompt: instruction + gold API documentation + program + one question, as chat messages.

One question per request (not all 8 at once) so that the answer is a single Yes/No token whose
log-probability we can read: that probability is the soft label the reward model learns from.
"""

from __future__ import annotations

import json

from minirlaif.feedback.questions import Question

SYSTEM_PROMPT = (
    "You are a meticulous reviewer of Python programs that call an API. You are given a task "
    "instruction, the documentation of the API that should be used for it, and a program written for "
    "the task. Answer the question about the program with one word: Yes or No."
)


def user_prompt(instruction: str, api_data: dict, program: str, question: Question) -> str:
    """The user turn. The API documentation is shown as JSON, in the database's own key order."""
    api_doc = json.dumps(api_data, indent=2, ensure_ascii=False, default=str)
    return (
        f"### Instruction\n{instruction.strip()}\n\n"
        f"### API documentation\n{api_doc}\n\n"
        f"### Program\n```python\n{program.rstrip()}\n```\n\n"
        f"### Question\n{question.text}\n"
        "Answer with Yes or No only."
    )


def build_messages(instruction: str, api_data: dict, program: str, question: Question) -> list[dict]:
    """Chat messages (system + user) asking `question` about `program`."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_prompt(instruction, api_data, program, question)},
    ]


def plain_prompt(messages: list[dict]) -> str:
    """The messages as one text, for models whose tokenizer has no chat template."""
    return "\n\n".join(m["content"] for m in messages) + "\nAnswer:"


def prompt_text(messages: list[dict]) -> str:
    """A canonical text of the messages: what the cache key hashes (same messages -> same text)."""
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)
