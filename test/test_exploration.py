"""The count-based novelty bonus (ssq_ros.learning.exploration) and its use by ssq-train."""
import io
import math

import numpy as np
import pytest
import torch

from ssq_ros.learning.exploration import VisitCounts


def test_the_bonus_falls_with_the_visits_of_each_cell():
    counts = VisitCounts(cell_size=0.05, scale=0.3)
    assert counts.visit([0.01, 0.01, 0.01]) == pytest.approx(0.3)
    assert counts.visit([0.04, 0.0, 0.049]) == pytest.approx(0.3 / math.sqrt(2))  # same cell
    assert counts.visit([0.06, 0.0, 0.0]) == pytest.approx(0.3)                 # the next one
    # floor, not truncation toward zero: -0.01 and 0.01 are different cells
    assert counts.cell([-0.01, 0.0, 0.0]) == (-1, 0, 0) != counts.cell([0.01, 0.0, 0.0])
    for _ in range(7):
        last = counts.visit([0.02, 0.02, 0.02])
    assert last == pytest.approx(0.3 / 3.0)  # the 9th visit of the first cell
    assert sum(counts.counts.values()) == 10


@pytest.mark.parametrize('position', [[0.0, math.nan, 0.0], [0.0, 0.0, math.inf], [],
                                      [[0.0, 0.0, 0.0]]])
def test_a_bad_position_is_refused_and_counts_nothing(position):
    counts = VisitCounts(0.05, 1.0)
    with pytest.raises(ValueError, match='position'):
        counts.visit(position)
    assert counts.counts == {}


@pytest.mark.parametrize('cell_size, scale', [(0.0, 1.0), (-0.1, 1.0), (math.nan, 1.0),
                                              (0.05, -1.0), (0.05, math.inf)])
def test_bad_settings_are_refused(cell_size, scale):
    with pytest.raises(ValueError):
        VisitCounts(cell_size, scale)


def test_the_counts_survive_a_checkpoint_and_refuse_other_settings():
    counts = VisitCounts(0.05, 0.5)
    rng = np.random.default_rng(0)
    for point in rng.uniform(-0.3, 0.3, size=(200, 3)):
        counts.visit(point)
    buffer = io.BytesIO()
    torch.save(counts.state_dict(), buffer)  # as the trainer's checkpoint holds it
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = VisitCounts(0.05, 0.5)
    restored.load_state_dict(state)
    assert restored.counts == counts.counts
    assert restored.visit([0.0, 0.0, 0.0]) == counts.visit([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match='cell_size'):
        VisitCounts(0.1, 0.5).load_state_dict(state)
    with pytest.raises(ValueError, match='do not match'):
        VisitCounts(0.05, 0.5).load_state_dict({**state, 'counts': state['counts'][:-1]})
