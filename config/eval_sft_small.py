"""evaluate.py: tiny SFT, tiny SFT + PPO and the small SFT model (config/sft_small.py) side by side."""
models = "runs/sft,runs/ppo,runs/sft_small"
out = "runs/eval_small"
