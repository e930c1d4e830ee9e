"""The paired verdict: Δ mean, 95% t-interval and its word."""

import math

import pytest
from scipy import stats

from distil.errors import DistilError
from distil.verdict import GAIN, LOSS, NONE, paired_verdict


def test_interval_is_the_t_interval_of_the_paired_differences():
    v = paired_verdict([0.90, 0.915, 0.915], [0.88, 0.89, 0.90])
    deltas = [0.02, 0.025, 0.015]
    sem = stats.sem(deltas)
    lo, hi = stats.t.interval(0.95, 2, loc=sum(deltas) / 3, scale=sem)
    assert v.mean == pytest.approx(0.02)
    assert (v.low, v.high) == (pytest.approx(lo), pytest.approx(hi))
    assert v.word == GAIN and v.seeds == 3


def test_words():
    assert paired_verdict([0.5, 0.6], [0.6, 0.7]).word == LOSS
    assert paired_verdict([0.7, 0.5], [0.6, 0.6]).word == NONE  # the interval straddles 0
    assert paired_verdict([0.6, 0.6], [0.6, 0.6]).word == NONE
    one = paired_verdict([0.9], [0.1])
    assert one.word == NONE and math.isinf(one.high) and one.to_dict()["high"] is None
    assert "one seed" in one.line()


def test_lower_is_better_flips_the_sign():
    v = paired_verdict([1.0, 1.1, 1.05], [1.5, 1.6, 1.55], higher_is_better=False)
    assert v.mean < 0 and v.word == GAIN
    assert paired_verdict([1.5, 1.6], [1.0, 1.1], higher_is_better=False).word == LOSS


def test_line_and_record():
    v = paired_verdict([0.91, 0.93], [0.90, 0.90])
    line = v.line()
    assert "over 2 seeds" in line and line.endswith(v.word) and "+2.00" in line
    record = v.to_dict()
    assert record["seeds"] == 2 and record["deltas"] == pytest.approx([0.01, 0.03])


def test_bad_input_names_the_problem():
    with pytest.raises(DistilError, match="one of each per seed"):
        paired_verdict([0.1, 0.2], [0.1])
    with pytest.raises(DistilError, match="no scores"):
        paired_verdict([], [])
