"""The LLM judge behind any OpenAI-compatible chat-completions server (OpenAI, vLLM, llama.cpp, ...).

One request per question: `max_tokens=1`, `temperature=0`, `logprobs=True, top_logprobs=5`, and
P(yes) from the top log-probabilities (see `scoring.p_yes_from_logprobs`). The retry policy is ours,
not the client's (`max_retries=0` on the client), so that it is visible and testable:

    429, 408, 409, 5xx, timeouts, connection errors,    -> retry with exponential backoff and jitter,
    a body that is not a chat completion, an answer          honouring the server's Retry-After
    that is neither Yes nor No
    401 / 403                                           -> JudgeAuthError at once (set OPENAI_API_KEY)
    any other 4xx                                       -> JudgeError at once (the request is wrong)
    retries exhausted                                   -> JudgeError saying what went wrong last

The API key comes from `api_key` or $OPENAI_API_KEY. It is handed to the client and otherwise only
used to scrub it out of any text we put in an error message; it never reaches logs or the cache.
"""

from __future__ import annotations

import email.utils
import os
import random
import time

import openai

from minirlaif.feedback.judges.base import Judge, JudgeAuthError, JudgeError, Query, RawAnswer
from minirlaif.feedback.scoring import p_yes_from_logprobs, yes_or_no

DUMMY_KEY = "EMPTY"  # what local servers get when no key is set: they accept any key
_RETRY_STATUS = {408, 409, 429}  # plus every 5xx


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
        top_logprobs: int = 5,
        price_per_1k: float = 0.0005,
    ):
        """
        model: model name the server knows. base_url: e.g. "http://127.0.0.1:8000/v1" for a local
        server (None: the client's default, api.openai.com). max_retries: retries after the first
        attempt. base_delay / max_delay: backoff is base_delay * 2**k seconds (with jitter), capped.
        price_per_1k: USD per 1000 billed tokens, for the cost estimate only (gpt-3.5-turbo input price).
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
        self.price_per_1k = price_per_1k
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

    def _request(self, messages: list[dict]):
        return self._client.chat.completions.create(
            model=self.model,
            messages=messages,
            logprobs=True,
            top_logprobs=self.top_logprobs,
            max_tokens=1,
            temperature=0.0,
        )

    # -- the interface ---------------------------------------------------------------------------

    def ask(self, query: Query) -> RawAnswer:
        tokens = 0
        problem = ""
        retry_after: float | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, retry_after))
            retry_after = None
            try:
                completion = self._request(query.messages)
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
                raise JudgeError(f"{self.name}: HTTP {e.status_code}: {self._scrub(e.message)}") from None
            except openai.APIConnectionError as e:  # includes APITimeoutError
                problem = f"{type(e).__name__}: {self._scrub(str(e))}"
                continue
            except (ValueError, openai.APIResponseValidationError) as e:  # the body was not JSON
                problem = f"malformed response body ({type(e).__name__})"
                continue

            try:
                text, top, used = _parse_completion(completion)
            except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
                problem = f"malformed chat completion ({type(e).__name__}: {self._scrub(str(e))[:200]})"
                continue
            tokens += used
            kind = yes_or_no(text)
            if kind is None:
                problem = f"the answer {self._scrub(text)!r} is neither Yes nor No"
                continue

            answer = "Yes" if kind == "yes" else "No"
            detail: dict = {"attempts": attempt + 1}
            p_yes = p_yes_from_logprobs(top) if top else None
            if top:
                detail["top_logprobs"] = [[tok, lp] for tok, lp in top]
            if p_yes is None:  # no log-probabilities (or no Yes/No among them): a hard label, recorded
                detail["fallback"] = "no logprobs" if not top else "no Yes/No token among the top logprobs"
                return RawAnswer(answer, 1.0 if kind == "yes" else 0.0, "text", tokens, detail)
            return RawAnswer(answer, p_yes, "logprobs", tokens, detail)

        raise JudgeError(
            f"{self.name}: no valid Yes/No answer to question {query.question.id!r} after "
            f"{self.max_retries + 1} attempts; last problem: {problem}"
        )


def _parse_completion(completion) -> tuple[str, list[tuple[str, float]] | None, int]:
    """(answer text, top log-probs of the first answer token or None, billed tokens) of a completion."""
    choice = completion.choices[0]
    text = choice.message.content
    if not isinstance(text, str):
        raise TypeError("the message has no text content")
    top = None
    logprobs = getattr(choice, "logprobs", None)
    content = getattr(logprobs, "content", None) if logprobs is not None else None
    if content:
        top = [(str(t.token), float(t.logprob)) for t in (content[0].top_logprobs or [])]
    usage = getattr(completion, "usage", None)
    used = int(getattr(usage, "total_tokens", 0) or 0) if usage is not None else 0
    return text, top, used


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
