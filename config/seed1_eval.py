"""evaluate.py: the --seed 1 chain, step 4 of 4."""
models = "runs/seed1/sft,runs/seed1/ppo"
out = "runs/seed1/eval"
