"""The three training loops, none importing another: plain PyTorch (``native``), the same loop
under Accelerate (``accelerated``), and the Hugging Face Trainer (``trainer``, with
``trainer_adapter``). The first two keep their books with ``progress``; all three call the pieces
in ``common``, choose the best model with ``selection`` and log to TensorBoard with ``tracking``."""
