"""One module per ``optwin`` command; each has ``register(sub)``, which adds its
subparser with the function that runs it.

Modules: :mod:`~optwin.commands.calibrate`, :mod:`~optwin.commands.train`,
:mod:`~optwin.commands.push`, :mod:`~optwin.commands.compare`, :mod:`~optwin.commands.demo`,
:mod:`~optwin.commands.sweep`, :mod:`~optwin.commands.bench` (``bench info``),
:mod:`~optwin.commands.emulate`.
"""
