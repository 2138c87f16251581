"""Training and evaluation of VideoITG grounding checkpoints (Variants C and B); see docs/training.md."""
