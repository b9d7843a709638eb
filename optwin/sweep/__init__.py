"""Parameter sweeps of twin trainings: grids, point runs, a resumable result store and plots.

Modules (kept apart on purpose):

``grid``     parse a sweep grid (TOML), canonical point configurations and their stable keys.
``point``    one measurement: a fully seeded twin training for one configuration.
``execute``  run the pending points serially or on dask.distributed (LocalCluster or a scheduler).
``store``    the result table: HDF5 (rewritten atomically after every point) plus a CSV mirror.
``plot``     aggregate results over two axes and draw heatmaps and curves (PNG).
"""
from optwin.sweep.grid import Grid, Point, load_grid, parse_grid, point_key  # noqa: F401
from optwin.sweep.point import run_point  # noqa: F401
from optwin.sweep.store import SweepStore, read_results  # noqa: F401
from optwin.sweep.execute import run_sweep  # noqa: F401
