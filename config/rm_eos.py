"""train_rm.py: the reward head on the EOS decoder state instead of the mean (the old default), README's
per-kind table.   python train_rm.py config/rm_eos.py && python bench/rm_pair_kinds.py runs/rm_eos"""
pooling = "eos"
lr = 1e-3
out = "runs/rm_eos"
