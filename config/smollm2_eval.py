"""evaluate.py: SmolLM2 SFT vs SmolLM2 SFT + PPO on the first 100 eval instructions, one sampled run each."""
models = "runs/smollm2/sft,runs/smollm2/ppo"
out = "runs/smollm2/eval"
limit = 100
runs = 1
max_new_tokens = 96
