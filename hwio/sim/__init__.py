"""The simulated bench: a physical optical experiment in software.

``hwio.open_bench("sim")`` builds it from ``hwio/benches/sim.toml``.  Drive it only
through ``slm.show(levels)``, ``camera.grab()`` and ``camera.exposure_s``; it renders camera
images (spots, noise, faults) from the frames the panels show.  Its ground truth is
private; tests read it with :func:`hwio.sim.testing.truth_of`.

Modules: :mod:`~hwio.sim.clock` (virtual clock), :mod:`~hwio.sim.truth` (the ``[truth.*]``
tables), :mod:`~hwio.sim.slm_physics` (pixel physics), :mod:`~hwio.sim.optics` (network and
cell), :mod:`~hwio.sim.camera_physics` (spots and sensor), :mod:`~hwio.sim.faults` (faults
and drift), :mod:`~hwio.sim.devices` (SimSLM, SimCamera), :mod:`~hwio.sim.engine` (ties
them together).
"""
from hwio.sim.clock import VirtualClock
from hwio.sim.devices import SimCamera, SimSLM
from hwio.sim.engine import SimEngine

__all__ = ["VirtualClock", "SimSLM", "SimCamera", "SimEngine"]
