"""Hardware I/O: device protocols, real drivers, the simulated bench, encoding, readout, recording.

Devices: :mod:`~hwio.devices` (SLM and Camera protocols, the stale-frame check),
:mod:`~hwio.device_access` (the one retry and timeout policy), :mod:`~hwio.drivers` (real
backends), :mod:`~hwio.sim` (the simulated bench), :mod:`~hwio.emulator` (real drivers
around simulated optics), :mod:`~hwio.regions` (logical devices as regions of one device),
:mod:`~hwio.backends`, :mod:`~hwio.settle_check` (is each settle time long enough).
Bench files: :mod:`~hwio.config` (schema), :mod:`~hwio.toml_table`, :mod:`~hwio.bench`
(``open_bench``), :mod:`~hwio.layout` (element and spot geometry); ``hwio/benches/*.toml``.
Encoding: :mod:`~hwio.encoding` (all encoders), :mod:`~hwio.double_phase`, :mod:`~hwio.blazed`,
:mod:`~hwio.dmd`, :mod:`~hwio.dither`, :mod:`~hwio.encoder_common`, :mod:`~hwio.transfer`
(realised amplitudes), :mod:`~hwio.response` (phase response, inverse LUT),
:mod:`~hwio.wavefront` (flatness maps), :mod:`~hwio.packing` (video packings).
Readout and training: :mod:`~hwio.readout` (spot powers, homodyne), :mod:`~hwio.bench_system`
(the bench as a training system).  Files: :mod:`~hwio.recording` (raw frames),
:mod:`~hwio.h5check` (HDF5 checks); :mod:`~hwio.progress` (progress on stderr).
"""


def open_bench(path_or_name):
    """Open a bench from a TOML file or an embedded name such as 'sim' (see hwio.bench)."""
    from hwio.bench import open_bench as _open
    return _open(path_or_name)


__all__ = ["open_bench"]
