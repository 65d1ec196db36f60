"""What keeps a run safe on disk and across processes, whatever loop trains it: the run directory
(``rundir``), checkpoints (``checkpoint``), the best model and early stopping (``selection``),
SIGTERM and Ctrl-C (``interrupt``), the launcher's processes (``launch``), TensorBoard
(``tracking``), the Hub (``hub``) and atomic files (``files``)."""
