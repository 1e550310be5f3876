"""Stage `pt`: continued pretraining on packed blocks of plain text (params.yaml `pt`)."""
from medforge import params
from medforge.train import TrainParams, run

if __name__ == "__main__":
    run("pt", params.load("pt", TrainParams), "data/prepared/pretrain_train.jsonl",
        "data/prepared/pretrain_validation.jsonl", "models/pt", assistant_only_loss=False)
