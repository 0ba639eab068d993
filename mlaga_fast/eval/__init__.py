"""Evaluation: the shared result format and writers (report), Stage-2 NC/LP evaluation
(instruct_eval.evaluate) and LLM answer scoring (scoring). Submodules import torch on use."""
