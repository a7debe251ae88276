"""minirlaif: a small, readable RLAIF implementation for API-calling code generation.

Layers (imports point downwards only):
    scripts   train_sft.py, train_rm.py, train_ppo.py, evaluate.py
    loops     ppo.py, feedback/
    models    policy.py (the interface; seq2seq), causal_policy.py (decoder-only), reward_model.py, checkpoint.py
    math      losses.py
    metrics   metrics/ (strings in, numbers out)
    sandbox   sandbox.py (a leaf: imports nothing from minirlaif)
    data      data/ (records, loaders, built-in benchmark, prompts), tokenizer.py
"""

__version__ = "0.1.0"
