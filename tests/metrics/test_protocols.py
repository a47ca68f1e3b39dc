import numpy as np
import pytest
import torch

import flashuq as fuq

M = fuq.metrics


def test_misleading_rate_golden():
    # docs/methods.md#golden-values
    mr = M.misleading_rate([1, 1, 1, 0, 0, 1], [0, 1, 0, 1, 0, 0])
    assert mr == (0.75, 0.5)
    assert mr.t_to_f == 0.75 and mr.f_to_t == 0.5
    assert M.misleading_rate(torch.tensor([True, True, True, False, False, True]),
                             np.array([0, 1, 0, 1, 0, 0])) == (0.75, 0.5)


def test_misleading_rate_degenerate():
    mr = M.misleading_rate([1, 1], [1, 0])
    assert mr.t_to_f == 0.5 and np.isnan(mr.f_to_t)  # empty denominator → NaN
    mr = M.misleading_rate([0], [1])
    assert np.isnan(mr.t_to_f) and mr.f_to_t == 1.0
    with pytest.raises(ValueError, match="same length"):
        M.misleading_rate([1, 0], [1])
    with pytest.raises(ValueError, match="binary"):
        M.misleading_rate([1, 2], [1, 0])


def test_tsu_golden():
    # docs/methods.md#golden-values
    U = [[.1, .2, .3], [.3, .2, .4], [.1, .1, .2]]
    assert M.tsu(U) == pytest.approx(100 / 3)
    assert f"{M.tsu(U):.2f}" == "33.33"
    assert M.tsu(U, columns=(0, 2)) == 100.0
    assert M.tsu(np.array(U)[:, [0, 2]]) == 100.0
    assert M.tsu(torch.tensor(U)) == pytest.approx(100 / 3)


def test_tsu_degenerate():
    assert M.tsu([[1.0, 1.0]]) == 0.0  # ties fail
    with pytest.raises(ValueError, match="two temperatures"):
        M.tsu([[1.0], [2.0]])
    with pytest.raises(ValueError, match=r"\[Q, m\]"):
        M.tsu([1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        M.tsu([[1.0, np.nan]])
    with pytest.raises(ValueError, match="out of range"):
        M.tsu([[1.0, 2.0]], columns=(0, 5))
