"""A run on disk and across processes, whatever loop trains it: the run directory (``rundir``),
checkpoints (``checkpoint``), SIGTERM and Ctrl-C (``interrupt``), the launcher's processes
(``launch``), the Hub (``hub``) and atomic files (``files``)."""
