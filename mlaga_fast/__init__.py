"""mlaga_fast: fast, practical MLaGA (Multimodal Large Language and Graph Assistant, arXiv 2506.02568).

Importing the package is cheap: it compiles nothing and needs no GPU, Triton or flash-attn.
The compiled core is ``mlaga_fast._C``; Triton kernels live in ``mlaga_fast.kernels``.
"""
from mlaga_fast._version import __version__

__all__ = ["__version__"]
