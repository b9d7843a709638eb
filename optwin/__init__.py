"""The ``optwin`` command line and the workflows behind it.

Modules: :mod:`~optwin.cli` (entry point, one error boundary), :mod:`~optwin.commands` (one
module per command), :mod:`~optwin.workflows` (what the commands do), :mod:`~optwin.sweep`
(parameter sweeps), :mod:`~optwin.settings` (training settings and their defaults),
:mod:`~optwin.runfile` (training-run files), :mod:`~optwin.outputs` (output checks, locks,
JSON), :mod:`~optwin.errors` (errors that become one-line messages).
"""
