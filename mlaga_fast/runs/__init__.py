"""What every stage shares about a run folder: its manifest and its model card."""
