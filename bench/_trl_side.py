"""The TRL 0.11.4 side of bench_ppo_vs_trl.py. Runs in bench/.venv-trl (trl 0.11.4, transformers 4.46.3).

Not run by hand: bench_ppo_vs_trl.py starts it as a subprocess and drives it with one JSON object per
line on stdin; every answer is one JSON object per line on stdout (everything else goes to stderr).
This keeps the process alive between commands, so TRL and our iterations can be interleaved (fair on
a machine whose background load drifts) and models are loaded once.

Commands: setup, iter, compare, quit. See bench_ppo_vs_trl.py for the fields.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

_PROTO = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # library prints cannot corrupt the protocol
warnings.filterwarnings("ignore")


def reply(obj) -> None:
    _PROTO.write(json.dumps(obj) + "\n")
    _PROTO.flush()


def build_tokenizer(directory: str, vocab_size: int, pad_id: int, eos_id: int):
    """A WordLevel tokenizer over token strings t0..t{V-1}, with <pad>/</s>/<unk> at pad/eos/2."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    names = {pad_id: "<pad>", eos_id: "</s>", 2: "<unk>"}
    vocab = {names.get(i, f"t{i}"): i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.padding_side = "right"  # T5: right-padded encoder (TRL PR #262 keeps enc-dec right-padded)
    fast.save_pretrained(directory)
    return fast


class Side:
    def __init__(self, msg: dict):
        import torch

        torch.set_num_threads(msg["threads"])
        self.msg = msg
        self.tokenizer = build_tokenizer(msg["tok_dir"], msg["vocab_size"], msg["pad_id"], msg["eos_id"])
        self.trainer = self.make_trainer(msg["ppo_epochs"], msg["minibatch"], msg["lr"], v_head=None)

    def make_trainer(self, ppo_epochs: int, minibatch: int, lr: float, v_head):
        import torch
        from trl import AutoModelForSeq2SeqLMWithValueHead, PPOConfig, PPOTrainer, create_reference_model

        m = self.msg
        torch.manual_seed(m["seed"])  # the (default, random) value-head init
        model = AutoModelForSeq2SeqLMWithValueHead.from_pretrained(m["model_dir"])
        if v_head == "zero":
            torch.nn.init.zeros_(model.v_head.summary.weight)
            torch.nn.init.zeros_(model.v_head.summary.bias)
        ref = create_reference_model(model)
        config = PPOConfig(batch_size=m["batch"], mini_batch_size=minibatch, gradient_accumulation_steps=1,
                           ppo_epochs=ppo_epochs, learning_rate=lr, init_kl_coef=m["beta"], adap_kl_ctrl=False,
                           gamma=1.0, lam=0.95, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1,
                           max_grad_norm=m["max_grad_norm"], seed=m["seed"], log_with=None)
        # AdamW like ours (TRL's default is Adam) so the update does the same work.
        optimizer = torch.optim.AdamW(filter(lambda p: p.requires_grad, model.parameters()), lr=lr, weight_decay=0.0)
        return PPOTrainer(config=config, model=model, ref_model=ref, tokenizer=self.tokenizer, optimizer=optimizer)

    def checksum(self) -> float:
        sd = self.trainer.model.pretrained_model.state_dict()
        return float(sum(v.double().sum().item() for v in sd.values()))

    def iteration(self, msg: dict) -> dict:
        """One PPO iteration as the TRL docs write it: ppo_trainer.generate, then ppo_trainer.step."""
        import torch

        queries = [torch.tensor(q, dtype=torch.long) for q in msg["prompts"]]
        n = msg["new_tokens"]
        gen_kwargs = dict(do_sample=True, top_k=0, top_p=1.0, min_new_tokens=n, max_new_tokens=n,
                          pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        torch.manual_seed(msg["seed"])
        t0 = time.perf_counter()
        responses = self.trainer.generate(queries, batch_size=len(queries), return_prompt=False, **gen_kwargs)
        t_gen = time.perf_counter() - t0
        scores = [torch.tensor(float(s)) for s in msg["scores"]]
        t1 = time.perf_counter()
        stats = self.trainer.step(queries, responses, scores)
        t_step = time.perf_counter() - t1
        lengths = [len(r) - 1 for r in responses]  # minus the decoder start token TRL keeps
        return {"generate_s": t_gen, "step_s": t_step,
                "forward_s": float(stats["time/ppo/forward_pass"]),
                "update_s": float(stats["time/ppo/optimize_step"]),
                "step_other_s": t_step - float(stats["time/ppo/forward_pass"]) - float(stats["time/ppo/optimize_step"]),
                "response_tokens": int(sum(lengths)), "min_len": min(lengths), "max_len": max(lengths),
                "kl": float(stats["objective/kl"]), "policy_loss": float(stats["ppo/loss/policy"])}

    def compare(self, msg: dict) -> dict:
        """Step-0 quantities on given responses: one minibatch = the whole batch, one epoch, lr = 0.

        With lr = 0 the AdamW step changes nothing, so the averaged stats step() returns are exactly the
        step-0 losses. `v_head`: "zero" (like ours) or "default" (TRL's: PyTorch's Linear init).
        """
        import torch

        trainer = self.make_trainer(1, self.msg["batch"], 0.0, v_head=msg["v_head"])
        start = self.tokenizer.pad_token_id  # = T5's decoder_start; generate() output starts with it
        queries = [torch.tensor(q, dtype=torch.long) for q in msg["prompts"]]
        responses = [torch.tensor([start] + r, dtype=torch.long) for r in msg["responses"]]
        scores = [torch.tensor(float(s)) for s in msg["scores"]]
        with torch.no_grad():
            inputs = trainer.prepare_model_inputs(queries, responses)
            logprobs, _, values, masks = trainer.batched_forward_pass(trainer.model, queries, responses, inputs)
        stats = trainer.step(queries, responses, scores)
        keys = ["objective/kl", "ppo/loss/policy", "ppo/loss/value", "ppo/loss/total", "ppo/policy/entropy",
                "ppo/policy/approxkl", "ppo/policy/clipfrac", "ppo/val/clipfrac", "ppo/returns/mean",
                "ppo/val/vpred", "ppo/mean_non_score_reward"]
        head = trainer.model.v_head.summary
        return {"stats": {k: float(stats[k]) for k in keys if k in stats},
                "logprobs": logprobs.tolist(), "values": values.tolist(), "masks": masks.tolist(),
                "v_head_weight": head.weight.detach().squeeze(0).tolist(), "v_head_bias": float(head.bias.detach()),
                "v_head_dropout": float(getattr(trainer.model.v_head.dropout, "p", 0.0))}


def main() -> None:
    side = None
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "setup":
                side = Side(msg)
                import torch
                import transformers
                import trl

                reply({"ok": True, "checksum": side.checksum(), "torch": torch.__version__,
                       "transformers": transformers.__version__, "trl": trl.__version__,
                       "threads": torch.get_num_threads()})
            elif msg["cmd"] == "iter":
                reply({"ok": True, **side.iteration(msg)})
            elif msg["cmd"] == "compare":
                reply({"ok": True, **side.compare(msg)})
            elif msg["cmd"] == "quit":
                reply({"ok": True})
                return
        except Exception as e:  # report, keep the protocol alive
            import traceback

            traceback.print_exc()
            reply({"ok": False, "error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
