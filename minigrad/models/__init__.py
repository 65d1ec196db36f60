"""Real models written with ``minigrad.nn``: ``bert`` (the encoder finetune fine-tunes)."""
