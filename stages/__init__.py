"""The pipeline's stages, one module each (dvc.yaml runs `python -m stages.<name>`)."""
import medforge  # noqa: F401  (first: it pins the CPU kernels before any stage code runs one)
