"""Measuring runs: the GLUE metrics (``metrics``), the evaluation of a saved run (``evaluation``),
whether two settings differ beyond seed noise (``compare``, checked by ``calibration``), and the
table of runs (``report``)."""
