"""Shared code for medforge stages: params, data formats, chat/loss masks, models, outputs.

Importing it pins the CPU kernels to AVX2 (PyTorch, oneDNN, MKL), so that the same commit and params give the same
numbers on every x86-64 CPU: on a CPU with AVX-512 the libraries otherwise pick other kernels, and the default
pipeline's SFT MCQ moved from 0.475 to 0.454 (docs/reproducibility.md). Each stage's package imports this first,
before any kernel runs; a variable already set in the environment wins (provenance records the kernels used).
"""
import os

CPU_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
for _name, _value in CPU_KERNELS.items():
    os.environ.setdefault(_name, _value)
