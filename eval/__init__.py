"""The evaluation suite every model variant goes through."""
import medforge  # noqa: F401  (first: it pins the CPU kernels before any evaluation runs one)
