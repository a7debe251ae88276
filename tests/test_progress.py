"""Progress bars in a log file: whole lines, no carriage-return redraws."""

import io
import time

from minirlaif import progress


class _Log(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_bar_in_a_log_file_writes_whole_lines(monkeypatch):
    log = _Log()
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    bar = progress.progress_bar(range(5), desc="sft", file=log, mininterval=0.0)
    for _ in bar:
        time.sleep(0.001)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert lines[0].startswith("sft:   0%") and lines[-1].startswith("sft: 100%") and "5/5" in lines[-1]
    assert all(line == line.rstrip() and line.startswith("sft:") for line in lines)


def test_bar_that_leaves_nothing_writes_nothing_when_cleared():
    log = _Log()
    bar = progress.progress_bar(range(3), desc="sampling", file=log, leave=False)
    for _ in bar:
        pass
    bar.close()
    assert "\r" not in log.getvalue() and all(line.startswith("sampling") for line in log.getvalue().splitlines())


def test_a_fast_loop_with_postfix_writes_its_first_and_last_state_only():
    """set_postfix() redraws on every call; in a log that would be one line per step."""
    log = _Log()
    bar = progress.progress_bar(range(200), desc="ppo", file=log)
    for step in bar:
        bar.set_postfix(loss=f"{1 / (step + 1):.3f}")
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("ppo:   0%") and lines[1].startswith("ppo: 100%"), lines
    assert "200/200" in lines[1] and "loss=0.005" in lines[1]
