"""Hardware I/O: device protocols, real drivers, the simulated bench, encoding, readout, recording."""


def open_bench(path_or_name):
    """Open a bench from a TOML file or an embedded name such as 'sim' (see hwio.bench)."""
    from hwio.bench import open_bench as _open
    return _open(path_or_name)


__all__ = ["open_bench"]
