"""Stage `pt`: continued pretraining on packed blocks of plain text (params.yaml `pt`)."""
from medforge import params
from medforge.train import run_sft

if __name__ == "__main__":
    run_sft("pt", params.load("pt"), assistant_only_loss=False)
