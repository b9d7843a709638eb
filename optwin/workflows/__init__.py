"""What the ``optwin`` commands do, as library functions.

Modules: :mod:`~optwin.workflows.from_calibration` (calibration file -> twin and bench
system), :mod:`~optwin.workflows.twin_training` (``train --system twin``),
:mod:`~optwin.workflows.bench_training` (``train --system bench``: the training modes,
``run_mode``), :mod:`~optwin.workflows.restarts` (resumable restarts),
:mod:`~optwin.workflows.drift` (drift watch and re-fits during bench training),
:mod:`~optwin.workflows.compare` and :mod:`~optwin.workflows.compare_plots` (twin vs bench,
figures, report page), :mod:`~optwin.workflows.demo` (the whole job end to end).
"""
