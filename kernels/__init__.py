"""Triton kernels, installed as ``mlaga_fast.kernels``.

Modules here import Triton; import them only through mlaga_fast's dispatch modules
(e.g. ``mlaga_fast.ops``), which fall back to PyTorch when Triton or a GPU is absent.
"""
