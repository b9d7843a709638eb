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

Importing this package registers the ``sim`` backend with :func:`hwio.config.register_backend`
(the ``[truth]`` parser and the engine factory); :mod:`hwio.backends` names it for that.
"""
from hwio.config import register_backend
from hwio.sim.clock import VirtualClock
from hwio.sim.devices import SimCamera, SimSLM
from hwio.sim.engine import SimEngine, open_engine
from hwio.sim.truth import parse_truth

__all__ = ["VirtualClock", "SimSLM", "SimCamera", "SimEngine"]

register_backend("sim", parse_truth=parse_truth, open_engine=open_engine)
