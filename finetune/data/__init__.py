"""The data: GLUE's tasks (``tasks``), read from the original files or the Hub, tokenized and
batched (``glue``)."""
