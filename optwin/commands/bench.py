"""``optwin bench info``: what a bench file describes (devices, backends, shapes, layouts); never its truth."""
from __future__ import annotations

from optwin.errors import UsageError
from optwin.outputs import print_json


def register(sub) -> None:
    p = sub.add_parser("bench", help="inspect a bench configuration",
                       description="Inspect a bench configuration (a TOML file or a built-in name such as 'sim').")
    bsub = p.add_subparsers(dest="bench_command", metavar="ACTION")
    info = bsub.add_parser("info", help="list devices, backends, shapes, layouts and network sizes",
                           description="List the devices (kind, backend, shape, bit depth), the weight-block "
                                       "layouts, the spot layouts and the network sizes of a bench. Reads the "
                                       "file only; with --open the bench is opened and the shapes are the "
                                       "devices' own.")
    info.add_argument("--bench", default="sim", help="bench file or built-in name (default: sim)")
    info.add_argument("--open", action="store_true", help="open the devices and report their actual shapes")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=run_info)
    p.set_defaults(func=_no_action(p))


def _no_action(parser):
    def run(args):
        raise UsageError("choose an action, e.g. 'optwin bench info --bench sim'")
    return run


def _describe(args) -> dict:
    from hwio.bench import describe_bench, open_bench
    try:
        if args.open:
            with open_bench(args.bench) as bench:
                return bench.describe()
        return describe_bench(args.bench)
    except (ValueError, ImportError) as exc:
        raise UsageError(str(exc)) from None


def _shape(s) -> str:
    return "x".join(map(str, s)) if s else "(from device)"


def run_info(args) -> int:
    info = _describe(args)
    if args.json:
        print_json(info)
        return 0
    sizes = info["sizes"]
    lines = [f"bench {info['bench']}  ({'simulated' if info['simulated'] else 'real'})  {info['path']}",
             f"network: {sizes['n_in']} inputs -> {sizes['n_hidden']} hidden -> {sizes['n_out']} outputs",
             "", "devices:",
             f"  {'name':<12} {'kind':<7} {'backend':<8} {'shape':<14} {'bits':>4}  timing"]
    for d in info["devices"]:
        timing = (f"settle {d['settle_time_s'] * 1e3:g} ms" if d["kind"] == "slm"
                  else f"exposure {d['exposure_s'] * 1e3:g} ms")
        bits = "" if d["bit_depth"] is None else d["bit_depth"]
        lines.append(f"  {d['name']:<12} {d['kind']:<7} {d['backend']:<8} {_shape(d['shape']):<14} {bits:>4}  {timing}")
    lines.append(f"  LO channels (lo columns): {', '.join(info['lo_channels'])}")
    lines += ["", "weight-block layouts:"]
    for name, lay in info["layouts"].items():
        lines.append(f"  {name:<12} {lay['n_rows']}x{lay['n_cols']} blocks of {_shape(lay['block_px'])} px, "
                     f"pitch {_shape(lay['pitch_px'])}, origin {tuple(lay['origin_px'])}, guard {lay['guard_px']}"
                     f"{', reference column' if lay['reference_col'] else ''}; extent {_shape(lay['extent_px'])} px")
    lines += ["", "spot layouts (layout frame):"]
    for name, sp in info["spots"].items():
        lines.append(f"  {name:<12} {sp['n']} spots on a {sp['grid'][0]}x{sp['grid'][1]} grid, pitch "
                     f"{sp['pitch_px']:g} px, origin {tuple(sp['origin_px'])}")
    print("\n".join(lines))
    return 0
