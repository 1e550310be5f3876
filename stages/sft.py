"""Stage `sft`: supervised fine-tuning on conversations, loss on every assistant turn only (params.yaml `sft`)."""
from medforge import params
from medforge.train import TrainParams, run

if __name__ == "__main__":
    run("sft", params.load("sft", TrainParams), "data/prepared/sft_train.jsonl",
        "data/prepared/sft_validation.jsonl", "models/sft", assistant_only_loss=True)
