"""train_ppo.py: 6 PPO iterations of 16 rollouts with SmolLM2 as policy, reference and reward model."""
sft = "runs/smollm2/sft"
rm = "runs/smollm2/rm"
out = "runs/smollm2/ppo"
iterations = 6
rollouts = 16
minibatch_size = 8
ppo_epochs = 2
lr = 1e-5
max_new_tokens = 96
save_every = 2
