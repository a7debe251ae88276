"""train_sft.py: the 6.7x larger `small` preset with its own best learning rate (README: "small beats big").
    python train_sft.py config/sft_small.py && python evaluate.py config/eval_sft_small.py"""
preset = "small"
lr = 5e-4
out = "runs/sft_small"
