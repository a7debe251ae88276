"""evaluate.py: the SFT model beside the 120-iteration PPO model (config/ppo_120.py)."""
models = "runs/sft,runs/ppo120"
out = "runs/eval120"
