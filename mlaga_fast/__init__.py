"""mlaga_fast: fast, practical MLaGA (Multimodal Large Language and Graph Assistant, arXiv 2506.02568).

Importing the package is cheap: it compiles nothing and needs no GPU, Triton or flash-attn.
The compiled core is ``mlaga_fast._C``; Triton kernels live in ``mlaga_fast.kernels``.

    from mlaga_fast import MLaGA, Aligner      # loaded on first use (they import torch)
"""
from mlaga_fast._version import __version__

__all__ = ["__version__", "MLaGA", "Aligner"]


def __getattr__(name: str):
    if name == "MLaGA":
        from mlaga_fast.assistant import MLaGA

        return MLaGA
    if name == "Aligner":
        from mlaga_fast.models.aligner import Aligner

        return Aligner
    raise AttributeError(f"module 'mlaga_fast' has no attribute {name!r}")
