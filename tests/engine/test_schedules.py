from __future__ import annotations

import numpy as np
import pytest

from pretrainlab.config import load_config
from pretrainlab.engine.schedules import cosine_schedule
from pretrainlab.study.run import make_pretrain_schedules


def test_cosine_schedule_warmup_and_ends() -> None:
    values = cosine_schedule(1.0, 0.0, 10, warmup_iters=2)
    np.testing.assert_allclose(values[:2], [0.0, 0.5])
    assert values[2] == 1.0
    assert values[-1] == pytest.approx(0.5 * (1 + np.cos(np.pi * 7 / 8)))
    assert np.all(np.diff(values[2:]) < 0)


def test_pretrain_schedules_dino() -> None:
    config = load_config(
        None,
        [
            "engine.max_epochs=4",
            "data.batch_size=128",
            "optim.lr=0.001",
            "optim.warmup_epochs=1",
            "method.warmup_teacher_temp=0.02",
            "method.teacher_temp=0.06",
            "method.warmup_teacher_temp_epochs=2",
            "method.momentum_teacher=0.99",
        ],
    )
    schedules = make_pretrain_schedules(config)(10, 1)
    assert schedules.total_iters == 40
    assert schedules.lr.max() == pytest.approx(0.001 * 128 / 256)  # linear scaling rule
    assert schedules.values['teacher_temp'][0] == pytest.approx(0.02)
    assert schedules.values['teacher_temp'][19] == pytest.approx(0.06)
    assert schedules.values['teacher_temp'][-1] == pytest.approx(0.06)
    assert schedules.values['teacher_momentum'][0] == pytest.approx(0.99)
    assert schedules.values['teacher_momentum'][-1] > 0.999
    step = schedules.at(25)
    assert step.epoch == 2 and step.lr == pytest.approx(schedules.lr[25])


def test_pretrain_schedules_follow_the_global_batch_and_per_process_steps() -> None:
    """2 processes x batch 128 with 5 steps each per epoch = 1 process x batch 256 with 5 steps."""
    config = load_config(None, ["engine.max_epochs=4", "data.batch_size=128", "optim.lr=0.001"])
    two_processes = make_pretrain_schedules(config)(5, 2)
    one_process = make_pretrain_schedules(config.model_copy(update={"data": config.data.model_copy(update={"batch_size": 256})}))(5, 1)
    assert two_processes.total_iters == 20
    np.testing.assert_allclose(two_processes.lr, one_process.lr)
    assert two_processes.lr.max() == pytest.approx(0.001 * 256 / 256)
    assert two_processes.last().values["teacher_momentum"] == pytest.approx(1.0, abs=1e-4)
