"""Stage `sft`: supervised fine-tuning on conversations, loss on every assistant turn only (params.yaml `sft`)."""
from medforge import params
from medforge.train import run_sft

if __name__ == "__main__":
    run_sft("sft", params.load("sft"), assistant_only_loss=True)
