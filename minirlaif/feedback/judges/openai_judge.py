"""The LLM judge behind any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp, ...).

One request per question: `max_tokens=1`, `temperature=0`, `logprobs=True, top_logprobs=20`.
P(yes) is read from the first answer token's top log-probabilities wherever a variant of Yes or No
is among them (`scoring.p_yes_from_logprobs`), whatever word the model actually began with: small
local models often start "The ..." while still giving Yes and No most of their mass. How each answer
was obtained is recorded in `detail["method"]`:

    "top_logprobs"   Yes/No variants among the top log-probabilities of the free answer
    "json_schema"    none were: the question is asked again with the answer constrained to
                     {"answer": "Yes" | "No"} (response_format json_schema), and P(yes) is read at
                     the answer token (llama.cpp, vLLM and OpenAI report the model's own
                     probabilities there, before the constraint)
    "text"           no usable log-probabilities at all: P(yes) is 1 or 0 from the answer text,
                     with `detail["fallback"]` saying why

The retry policy is ours, not the client's (`max_retries=0` on the client), so that it is visible
and testable:

    429, 408, 409, 5xx, timeouts, connection errors,    -> retry with exponential backoff and jitter,
    a body that is not a chat completion                     honouring the server's Retry-After
    401 / 403                                           -> JudgeAuthError at once (set OPENAI_API_KEY)
    any other 4xx                                       -> JudgeError at once (the request is wrong)
    retries exhausted                                   -> JudgeError saying what went wrong last
    no Yes/No in the answer, its log-probs, or the      -> JudgeError (temperature 0: asking the
    constrained answer                                     same question again gives the same answer)

The API key comes from `api_key` or $OPENAI_API_KEY. It is handed to the client and otherwise only
used to scrub it out of any text we put in an error message; it never reaches logs or the cache.
"""

from __future__ import annotations

import email.utils
import os
import random
import re
import time

import openai

from minirlaif.feedback.judges.base import Judge, JudgeAuthError, JudgeError, Query, RawAnswer
from minirlaif.feedback.scoring import p_yes_from_logprobs, yes_or_no

DUMMY_KEY = "EMPTY"  # what local servers get when no key is set: they accept any key
_RETRY_STATUS = {408, 409, 429}  # plus every 5xx
# The constrained second request: an object whose only field is the answer, one of two words.
ANSWER_SCHEMA = {
    "name": "answer",
    "strict": True,
    "schema": {"type": "object", "properties": {"answer": {"type": "string", "enum": ["Yes", "No"]}},
               "required": ["answer"], "additionalProperties": False},
}
_JSON_ANSWER = re.compile(r'"answer"\s*:\s*"(Yes|No)', re.IGNORECASE)


class OpenAIJudge(Judge):
    """Judge through the official `openai` client. `name` is "openai:<model>"."""

    def __init__(
        self,
        model: str = "gpt-3.5-turbo",
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        max_workers: int = 8,
        max_retries: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        timeout_s: float = 60.0,
        top_logprobs: int = 20,
        price_per_1k: float | None = None,
        constrain: bool = True,
    ):
        """
        model: model name the server knows. base_url: e.g. "http://127.0.0.1:8000/v1" for a local
        server (None: the client's default, api.openai.com). max_retries: retries after the first
        attempt. base_delay / max_delay: backoff is base_delay * 2**k seconds (with jitter), capped.
        top_logprobs: how many alternatives of the answer token to read (OpenAI allows at most 20).
        constrain: ask again with the answer constrained (JSON schema) when no Yes/No is among them.
        price_per_1k: USD per 1000 billed tokens, for the cost estimate only (default: gpt-3.5-turbo's input
        price 0.0005 for OpenAI, 0 with a base_url: a server of your own costs no tokens).
        """
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if base_url is None:
                raise JudgeAuthError(
                    "no API key for the OpenAI judge: set the OPENAI_API_KEY environment variable "
                    "(or give base_url of a local OpenAI-compatible server, which gets a dummy key)"
                )
            key = DUMMY_KEY
        self._secret = key
        self._client = openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=timeout_s)
        self.model = model
        self.name = f"openai:{model}"
        self.max_workers = max_workers
        self.max_retries = max_retries
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.top_logprobs = top_logprobs
        self.price_per_1k = price_per_1k if price_per_1k is not None else (0.0005 if base_url is None else 0.0)
        self.constrain = constrain
        self._rng = random.Random()

    # -- helpers ---------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """`text` with the API key blanked out: server messages may quote what we sent."""
        return text.replace(self._secret, "***") if len(self._secret) >= 4 else text

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        if retry_after is not None:  # the server knows best when it will take us back
            return min(self.max_delay, retry_after)
        cap = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return cap / 2 + self._rng.uniform(0, cap / 2)  # jitter: spread out threads that failed together

    def _request(self, messages: list[dict], constrained: bool):
        if constrained:  # room for '{"answer": "Yes"}' and a server's whitespace around it
            extra = {"max_tokens": 24, "response_format": {"type": "json_schema", "json_schema": ANSWER_SCHEMA}}
        else:
            extra = {"max_tokens": 1}
        return self._client.chat.completions.create(
            model=self.model, messages=messages, logprobs=True, top_logprobs=self.top_logprobs,
            temperature=0.0, **extra,
        )

    def _complete(self, query: Query, constrained: bool = False) -> tuple[str, list, int, int]:
        """(answer text, per-token [(token, top log-probs)], billed tokens, attempts): one completion,
        after the retries that transport errors and malformed bodies get."""
        tokens = 0
        problem = ""
        retry_after: float | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, retry_after))
            retry_after = None
            try:
                completion = self._request(query.messages, constrained)
            except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                raise JudgeAuthError(
                    f"{self.name}: the server refused the API key (HTTP {e.status_code}); "
                    "set OPENAI_API_KEY to a valid key"
                ) from None
            except openai.APIStatusError as e:
                if e.status_code in _RETRY_STATUS or e.status_code >= 500:
                    problem = f"HTTP {e.status_code}: {self._scrub(e.message)}"
                    retry_after = _retry_after(e.response.headers)
                    continue
                what = " to an answer constrained by a JSON schema" if constrained else ""
                raise JudgeError(f"{self.name}: HTTP {e.status_code}{what}: {self._scrub(e.message)}") from None
            except openai.APIConnectionError as e:  # includes APITimeoutError
                problem = f"{type(e).__name__}: {self._scrub(str(e))}"
                continue
            except (ValueError, openai.APIResponseValidationError) as e:  # the body was not JSON
                problem = f"malformed response body ({type(e).__name__})"
                continue
            try:
                text, positions, used = _parse_completion(completion)
            except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
                problem = f"malformed chat completion ({type(e).__name__}: {self._scrub(str(e))[:200]})"
                continue
            return text, positions, tokens + used, attempt + 1
        raise JudgeError(
            f"{self.name}: no answer to question {query.question.id!r} after "
            f"{self.max_retries + 1} attempts; last problem: {problem}"
        )

    # -- the interface ---------------------------------------------------------------------------

    def ask(self, query: Query) -> RawAnswer:
        text, positions, tokens, attempts = self._complete(query)
        top = positions[0][1] if positions else []
        detail: dict = {"attempts": attempts, "sampled": self._scrub(text)[:40]}
        if top:
            detail["top_logprobs"] = [[tok, lp] for tok, lp in top]
        p_yes = p_yes_from_logprobs(top) if top else None
        if p_yes is not None:  # whatever word was sampled: the model's Yes-vs-No odds are right there
            return _answer(p_yes, "logprobs", tokens, {**detail, "method": "top_logprobs"})

        fallback = "no logprobs" if not positions else "no Yes/No token among the top logprobs"
        # Constrain when the log-probs had no Yes/No, or when there were none and the text is no answer either.
        if self.constrain and (positions or yes_or_no(text) is None):
            c_text, c_positions, c_tokens, c_attempts = self._complete(query, constrained=True)
            tokens += c_tokens
            detail.update(attempts=attempts + c_attempts, constrained=self._scrub(c_text)[:60])
            # P(yes) where the answer word is: the first generated token that is itself Yes or No.
            at = next((t for tok, t in c_positions if yes_or_no(tok) is not None), None)
            p_yes = p_yes_from_logprobs(at) if at else None
            if p_yes is not None:
                detail["top_logprobs"] = [[tok, lp] for tok, lp in at]
                return _answer(p_yes, "logprobs", tokens, {**detail, "method": "json_schema"})
            match = _JSON_ANSWER.search(c_text)
            if match:
                text = match.group(1)
                fallback += "; constrained answer without logprobs"
        kind = yes_or_no(text)
        if kind is None:
            raise JudgeError(
                f"{self.name}: no Yes/No answer to question {query.question.id!r}: the answer "
                f"{self._scrub(text)[:40]!r} is neither Yes nor No, and {fallback}"
                + ("" if self.constrain else " (constrain=True would ask again with the answer constrained)")
            )
        return RawAnswer("Yes" if kind == "yes" else "No", 1.0 if kind == "yes" else 0.0, "text", tokens,
                         {**detail, "method": "text", "fallback": fallback})


def _answer(p_yes: float, source: str, tokens: int, detail: dict) -> RawAnswer:
    return RawAnswer("Yes" if p_yes >= 0.5 else "No", p_yes, source, tokens, detail)


def _parse_completion(completion) -> tuple[str, list[tuple[str, list[tuple[str, float]]]], int]:
    """(answer text, [(token, its top log-probs)] per generated token ([] without logprobs), billed tokens)."""
    choice = completion.choices[0]
    text = choice.message.content
    if not isinstance(text, str):
        raise TypeError("the message has no text content")
    logprobs = getattr(choice, "logprobs", None)
    content = getattr(logprobs, "content", None) if logprobs is not None else None
    positions = [(str(t.token), [(str(u.token), float(u.logprob)) for u in (t.top_logprobs or [])])
                 for t in content or []]
    usage = getattr(completion, "usage", None)
    used = int(getattr(usage, "total_tokens", 0) or 0) if usage is not None else 0
    return text, positions, used


def _retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date); None when absent."""
    try:
        if headers.get("retry-after-ms") is not None:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None
