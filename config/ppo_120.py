"""train_ppo.py: 120 PPO iterations instead of 80.
    python train_ppo.py config/ppo_120.py && python evaluate.py config/eval_ppo_120.py"""
iterations = 120
out = "runs/ppo120"
