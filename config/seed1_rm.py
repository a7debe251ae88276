"""train_rm.py: the --seed 1 chain, step 2 of 4."""
seed = 1
sft = "runs/seed1/sft"
out = "runs/seed1/rm"
