"""train_sft.py: SmolLM2-135M-Instruct (decoder-only, pretrained) fine-tuned on the built-in data, sized for a
2-core CPU. Step 1 of 4 (then smollm2_rm.py, smollm2_ppo.py, smollm2_eval.py). Export the weights first:
    python -m minirlaif.offline_models export smollm2-135m models/smollm2-135m"""
model = "models/smollm2-135m"
out = "runs/smollm2/sft"
max_steps = 60
batch_size = 8
lr = 5e-5
warmup_steps = 6
eval_every = 1000
