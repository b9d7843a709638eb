"""The shared HDF5 root check (kind, schema version, nothing outside the file) and the GenTL
producer check of the GenICam driver."""
import logging
import os

import h5py
import numpy as np
import pytest

from hwio.h5check import check_kind_version, check_root, refuse_external
from hwio.drivers.genicam_camera import check_producer, find_producers


class MyError(ValueError):
    pass


def _file(path, kind="optwin-x", version=1, build=None):
    with h5py.File(path, "w") as f:
        if kind is not None:
            f.attrs["kind"] = kind
        if version is not None:
            f.attrs["schema_version"] = version
        f.create_group("g")["d"] = np.arange(4.0)
        if build:
            build(f)
    return path


def _check(path, newest=2):
    with h5py.File(path, "r") as f:
        return check_root(f, path, "optwin-x", newest, what="an x file", label="x", error=MyError)


@pytest.mark.parametrize("version", [0, 1, 2, np.int32(2), np.uint8(1)])
def test_accepts_known_versions(tmp_path, version):
    assert _check(_file(tmp_path / "a.h5", version=version)) == int(version)


@pytest.mark.parametrize("kind, version, fragment", [
    ("optwin-y", 1, "not an x file (kind='optwin-y')"),
    (None, 1, "kind=None"),
    (b"optwin-y", 1, "kind='optwin-y'"),
    (np.arange(40), 1, "kind=[0, 1, 2"),
    ("optwin-x", 3, "x schema 3 is newer than this optwin reads (2)"),
    ("optwin-x", "1", "schema_version '1' is not a whole number"),
    ("optwin-x", 1.0, "schema_version 1.0 is not a whole number"),
    ("optwin-x", -1, "schema_version -1"),
    ("optwin-x", True, "schema_version True"),
    ("optwin-x", np.array([1, 2]), "schema_version [1, 2]"),
    ("optwin-x", None, "without a schema_version"),
])
def test_refuses_other_kinds_and_versions_in_one_line(tmp_path, kind, version, fragment):
    path = _file(tmp_path / "a.h5", kind=kind, version=version)
    with pytest.raises(MyError) as info:
        _check(path)
    text = str(info.value)
    assert fragment in text and str(path) in text and "\n" not in text and len(text) < 300


def test_bytes_kind_is_read_as_text(tmp_path):
    path = _file(tmp_path / "a.h5", kind=np.bytes_(b"optwin-x"))
    assert _check(path) == 1


def test_refuses_data_outside_the_file(tmp_path):
    other = _file(tmp_path / "other.h5")
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.arange(4.0).tobytes())

    def ext_link(f):
        f["g/link"] = h5py.ExternalLink(str(other), "/g/d")

    def ext_storage(f):
        f["g"].create_dataset("e", shape=(4,), dtype=np.float64, external=[(str(raw), 0, 32)])

    def virtual(f):
        layout = h5py.VirtualLayout(shape=(4,), dtype=np.float64)
        layout[:] = h5py.VirtualSource(str(other), "g/d", shape=(4,))
        f.create_group("deep/er").create_virtual_dataset("v", layout)

    for build, fragment in ((ext_link, "/g/link is an external link to"), (ext_storage, r"external file\(s\)"),
                            (virtual, "/deep/er/v is a virtual dataset")):
        path = _file(tmp_path / f"{build.__name__}.h5", build=build)
        with pytest.raises(MyError, match=fragment):
            _check(path)


def test_soft_links_and_hard_link_cycles_are_walked_once(tmp_path):
    def links(f):
        f["g/up"] = f["/"]                       # a hard link back to the root: a cycle
        f["soft"] = h5py.SoftLink("/nowhere")   # dangling
        f["g/self"] = h5py.SoftLink("/g")
    assert _check(_file(tmp_path / "a.h5", build=links)) == 1


def test_kind_version_check_alone(tmp_path):
    path = _file(tmp_path / "a.h5", build=lambda f: f.__setitem__("x", h5py.ExternalLink("b.h5", "/")))
    with h5py.File(path, "r") as f:
        assert check_kind_version(f, path, "optwin-x", 1, what="an x file", label="x") == 1
        with pytest.raises(ValueError, match="external link"):
            refuse_external(f, path, what="an x file")


# ------------------------------------------------------------------------------------ GenTL producers
def test_producer_must_be_an_existing_cti_file(tmp_path):
    good = tmp_path / "vendor.cti"
    good.write_bytes(b"\x7fELF")
    assert check_producer(good) == str(good)
    link = tmp_path / "current.cti"
    link.symlink_to(good)
    assert check_producer(link) == str(link)
    (tmp_path / "dir.cti").mkdir()
    so = tmp_path / "vendor.so"
    so.write_bytes(b"\x7fELF")
    cases = [(tmp_path / "absent.cti", "not found"), (tmp_path / "dir.cti", "not a regular file"),
             (so, "does not end in .cti"), ("", "must be the path"), (5, "must be the path"),
             (os.devnull + ".cti", "not found")]
    for path, fragment in cases:
        with pytest.raises(ValueError, match=fragment) as info:
            check_producer(path)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="not found"):
        find_producers([str(good), str(tmp_path / "absent.cti")])
    with pytest.raises(ValueError, match="empty list"):
        find_producers([])
    assert find_producers(str(good)) == [str(good)]


def test_producers_from_the_environment(tmp_path, monkeypatch):
    (tmp_path / "b.cti").write_bytes(b"x")
    (tmp_path / "a.cti").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    monkeypatch.setenv("GENICAM_GENTL64_PATH", str(tmp_path))
    assert find_producers() == [str(tmp_path / "a.cti"), str(tmp_path / "b.cti")]


def test_producer_is_logged_before_it_is_loaded(tmp_path, caplog):
    """The simulated producer of the genicam wheel: its path is logged before harvesters loads it."""
    from importlib import metadata
    pytest.importorskip("harvesters.core")
    try:
        files = metadata.files("genicam") or []
    except metadata.PackageNotFoundError:
        files = []
    cti = [str(f.locate()) for f in files if str(f).endswith("viky.cti")]
    if not cti:
        pytest.skip("simulated GenTL producer viky.cti not found in the genicam wheel")
    from hwio.devices import Timeline
    from hwio.drivers.genicam_camera import GenICamCamera
    with caplog.at_level(logging.INFO, logger="hwio.drivers.genicam_camera"):
        cam = GenICamCamera(cti[0], timeline=Timeline())
        cam.close()
    loads = [r.getMessage() for r in caplog.records if "loading GenTL producer" in r.getMessage()]
    assert loads and os.path.realpath(cti[0]) in [os.path.realpath(m.split()[3]) for m in loads]
