"""Each fine-tuning mode trains for real on the tiny model: full, LoRA, and QLoRA (bitsandbytes 4-bit NF4)."""
import math

import pytest
import torch

from medforge import params
from medforge.modeling import is_adapter, load_model
from medforge.train import make_trainer
from tests.test_loss_mask_and_packing import CONVERSATIONS, FP32


@pytest.mark.parametrize("finetuning", ["full", "lora", "qlora"])
def test_mode_trains_and_saves(tiny_model_dir, tmp_path, finetuning):
    p = params.load("sft", init=str(tiny_model_dir), finetuning=finetuning, max_steps=3, batch_size=2, max_length=128,
                    learning_rate=1e-2, logging_steps=1)
    trainer = make_trainer(p, CONVERSATIONS, CONVERSATIONS, str(tmp_path / "run"), assistant_only_loss=True,
                           mp=FP32)
    before = {n: t.detach().clone() for n, t in trainer.model.named_parameters() if t.requires_grad}
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    changed = [n for n, t in trainer.model.named_parameters() if t.requires_grad and not torch.equal(t, before[n])]
    assert changed, "no trainable parameter moved"
    if finetuning != "full":
        assert all("lora_" in n for n in before)
    if finetuning == "qlora":
        import bitsandbytes as bnb
        assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules())
    out = tmp_path / "out"
    trainer.save_model(str(out))
    assert is_adapter(out) == (finetuning != "full")
    if finetuning == "lora":
        merged = load_model(out, FP32)
        assert not any("lora_" in n for n, _ in merged.named_parameters())
        assert all(t.requires_grad for t in merged.parameters())  # trainable like any loaded model
        # The same adapter under a reward head (the rm stage starting from a LoRA SFT): same merged backbone.
        reward = load_model(out, FP32, head="reward")
        assert reward.config.num_labels == 1
        q = "model.layers.0.self_attn.q_proj.weight"
        assert torch.equal(reward.get_parameter(q), merged.get_parameter(q))
