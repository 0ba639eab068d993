"""Training: shared utilities (checkpoint, distributed, metrics, manifest, schedule) and the stage trainers.

Submodules are imported on use; importing ``mlaga_fast.train`` itself loads nothing heavy.
"""
