"""train_rm.py: the reward model on SmolLM2's own samples (100 instructions x 4), initialised from its SFT model."""
sft = "runs/smollm2/sft"
out = "runs/smollm2/rm"
prompts = 100
k = 4
epochs = 1
batch_size = 8
lr = 5e-5
max_new_tokens = 96
