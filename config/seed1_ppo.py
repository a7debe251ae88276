"""train_ppo.py: the --seed 1 chain, step 3 of 4."""
seed = 1
sft = "runs/seed1/sft"
rm = "runs/seed1/rm"
out = "runs/seed1/ppo"
