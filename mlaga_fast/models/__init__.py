"""Trainable models: the Stage 1 aligner (``aligner``), its contrastive loss and positive sampler
(``contrastive``), and the Stage 2 projector (``projector``). Import the submodule you need; this
package itself imports nothing heavy."""
