"""train_sft.py: the whole chain with --seed 1, step 1 of 4 (then seed1_rm.py, seed1_ppo.py, seed1_eval.py).
Another SFT initialisation and data order, another RM training set, another PPO seed; the eval split stays."""
seed = 1
out = "runs/seed1/sft"
