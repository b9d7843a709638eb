import re

import numpy as np

from calibration.calset import CalibrationSet
from calibration.quantities import Fit, Quantity
from calibration.report import write_report


def test_report_has_one_png_per_fit_and_embeds_them(tmp_path):
    cs = CalibrationSet(bench_name="sim")
    x = np.linspace(0, 5, 40)
    cs.add(Fit("absorber", "thin", {"alpha0": Quantity(5.1, 0.05)}, x=x, y=np.tanh(x),
               y_fit=np.tanh(x) + 0.01))
    cs.add(Fit("camera", "emva1288", {"gain_adu_per_e": Quantity(0.5, 0.01)},
               arrays={"prnu_map": np.random.default_rng(0).normal(1, 0.01, (8, 8))}))
    page = write_report(cs, tmp_path / "rep", truth={"absorber.alpha0": 5.0, "camera.gain_adu_per_e": 0.6})
    text = page.read_text()
    assert (tmp_path / "rep" / "absorber.png").stat().st_size > 1000
    assert (tmp_path / "rep" / "camera.png").stat().st_size > 1000
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 2
    # recovered vs true: alpha0 within 2 sigma (ok), gain 10 sigma off (bad)
    assert re.search(r'class="ok">2</td>', text)
    assert re.search(r'class="bad">-10</td>', text)
