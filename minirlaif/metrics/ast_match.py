"""Placeholder: being written."""


def ast_match(*args, **kwargs):
    raise NotImplementedError


def ast_scores(*args, **kwargs):
    raise NotImplementedError
