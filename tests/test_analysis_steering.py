"""Steering with a dose-response sweep: dose 0 is the unsteered model, a vector along the correct colour's
unembedding raises the answer's probability and its negative lowers it, batching does not change numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arcscope.analysis import AnalysisError, Subject
from arcscope.analysis.steering import dose_response, steer_positions
from tests.conftest import hand_task, tiny_arc_lm


@pytest.fixture(scope="module")
def subject(arc_tokenizer):
    task = hand_task(
        "steer",
        train=[([[1, 2], [3, 4]], [[4, 3], [2, 1]]), ([[5, 6], [7, 8]], [[8, 7], [6, 5]])],
        test=[([[2, 2], [3, 1]], [[1, 3], [2, 2]])],
    )
    return Subject.from_task(tiny_arc_lm(max_positions=4096), task, tokenizer=arc_tokenizer)


def test_dose_zero_is_the_unsteered_model(subject):
    r = dose_response(subject, torch.randn(32), hook="blocks.1.hook_resid_pre", doses=[0.0, 1.0], scale="raw")
    assert r.value[0] == pytest.approx(r.baseline, abs=1e-6)
    assert r.kl[0] == pytest.approx(0.0, abs=1e-7)
    assert r.changed_cells[0] == 0 and r.top1_changed[0] == 0
    assert np.allclose(r.colour_probs.sum(-1) <= 1.0 + 1e-6, True)


def test_unembedding_direction_moves_the_answer(subject):
    # The correct colour of answer cell 0 read off the unembedding: adding it at the last residual raises that
    # cell's log-probability, subtracting lowers it, monotonically in the dose.
    model = subject.model
    k = 0
    w = model.lm_head.weight[int(subject.answer.target[k])].detach()
    norm_w = model.model.norm.weight.detach()
    direction = w * norm_w  # through the final RMSNorm's gain
    doses = [-4.0, -1.0, 0.0, 1.0, 4.0]
    r = dose_response(
        subject,
        direction,
        hook="blocks.1.hook_resid_post",
        doses=doses,
        metric="logprob",
        batch_size=2,
    )
    cell0 = r.per_cell[:, k]
    assert np.all(np.diff(cell0) > 0), cell0
    assert r.unit > 0 and np.allclose(r.coefficients, np.array(doses) * r.unit)
    # batching is only a speed choice
    r1 = dose_response(subject, direction, hook="blocks.1.hook_resid_post", doses=doses, batch_size=1)
    assert np.allclose(r.value, r1.value, atol=1e-5)
    assert r.half_effect is not None and 0 < r.half_effect <= 4.0
    table = r.to_table()
    assert table.num_rows == 5 and "p_colour_9" in table.column_names
    js = r.to_json()
    assert js["kind"] == "steer" and len(js["grids"]) == 5


def test_positions_and_errors(subject):
    m = steer_positions(subject, "test-input")
    assert int(m.sum()) == 4  # the 2x2 test input's cell tokens
    assert int(steer_positions(subject, "answer").sum()) == len(subject) - subject.n_prompt
    with pytest.raises(AnalysisError, match="steer at"):
        steer_positions(subject, "everywhere")
    with pytest.raises(AnalysisError, match="entries"):
        dose_response(subject, torch.ones(7), hook="blocks.0.hook_resid_pre")
    with pytest.raises(AnalysisError, match="hook="):
        dose_response(subject, torch.ones(32))
    with pytest.raises(AnalysisError, match="one site"):
        dose_response(subject, torch.ones(32), hook="hook_resid_pre")
