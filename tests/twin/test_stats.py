import numpy as np
import pytest

from twin.stats import mvm_error_stats, nrmse


def test_recovers_known_systematic_and_shot_noise():
    rng = np.random.default_rng(0)
    p = rng.normal(0, 2.0, (400, 8))                 # spread 2
    bias = 0.1 * rng.normal(size=p.shape)            # systematic error, rms 0.1 -> 0.05 normalised
    shots = p + bias + 0.2 * rng.normal(size=(5,) + p.shape)   # shot noise 0.2 -> 0.1 normalised
    s = mvm_error_stats(shots, p)
    assert s["systematic_nrmse"] == pytest.approx(0.05, rel=0.05)
    assert s["shot_to_shot_nrmse"] == pytest.approx(0.10, rel=0.03)
    assert s["total_nrmse"] == pytest.approx(np.hypot(0.05, 0.10), rel=0.03)
    assert s["slope"] == pytest.approx(1.0, abs=0.01)


def test_perfect_model_has_no_systematic_error():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(300, 5))
    shots = p + 0.3 * rng.normal(size=(4,) + p.shape)
    s = mvm_error_stats(shots, p)
    # the estimate of a zero systematic error is only limited by the finite sample (~sqrt(2/N))
    assert s["systematic_nrmse"] < 0.2 * s["shot_to_shot_nrmse"]
    assert nrmse(shots[0], p) == pytest.approx(s["noise_floor_nrmse"], rel=0.1)


def test_bad_input():
    with pytest.raises(ValueError, match="n_repeats"):
        mvm_error_stats(np.zeros((1, 3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="spread"):
        nrmse(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        mvm_error_stats(np.full((2, 3, 2), np.nan), np.ones((3, 2)))


def test_prediction_noise_belongs_to_the_floor_not_to_the_systematic_error():
    # a perfect model fed a noisy measured input: its prediction scatters with a known variance
    rng = np.random.default_rng(7)
    truth = rng.normal(0, 1, (400, 3))
    shots = truth + rng.normal(0, 0.05, (4, 400, 3))
    pred = truth + rng.normal(0, 0.08, truth.shape)
    plain = mvm_error_stats(shots, pred)
    aware = mvm_error_stats(shots, pred, prediction_var=0.08 ** 2)
    assert plain["systematic_nrmse"] > 0.06                     # the noisy input looks like model error
    assert aware["systematic_nrmse"] < 0.015                     # ... unless it is accounted for
    spread = np.std(pred)
    assert aware["noise_floor_nrmse"] == pytest.approx(np.hypot(0.05, 0.08) / spread, rel=0.05)
    assert aware["total_nrmse"] / aware["noise_floor_nrmse"] == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="prediction_var"):
        mvm_error_stats(shots, pred, prediction_var=-1.0)
