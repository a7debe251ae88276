"""Metrics: strings (and records / the API database) in, numbers out. No model imports here."""

from minirlaif.metrics.ast_match import ast_match, ast_scores
from minirlaif.metrics.codebleu import codebleu
from minirlaif.metrics.rouge import rouge_l

__all__ = ["ast_match", "ast_scores", "codebleu", "rouge_l"]
