"""The digital twin: the optical network in numpy, its training and its statistics.

Modules: :mod:`~twin.network` (the network: MVM layers and the cell between them),
:mod:`~twin.layers` (an optical MVM with bench imperfections), :mod:`~twin.activation` and
:mod:`~twin.absorber` (the vapour cell's laws), :mod:`~twin.spot` (spot-averaged cell law),
:mod:`~twin.system` (the ``System`` protocol a twin, a bench or a hybrid follows),
:mod:`~twin.hybrid` (forward on the bench, backward through the twin),
:mod:`~twin.probe_correction` (calibrated optical derivative), :mod:`~twin.training`
(minibatch training, evaluation), :mod:`~twin.restarts` (best of several initialisations),
:mod:`~twin.optim` (optimizers), :mod:`~twin.losses`, :mod:`~twin.tasks` (data sets),
:mod:`~twin.stats` (bench-vs-twin statistics).
"""
