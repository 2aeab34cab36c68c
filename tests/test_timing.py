"""The worker's timing arithmetic, exactly, with a fake clock: phases, steady-state percentiles, compile cost,
training time without the evaluations, time to target. Durations are powers of two, so every sum is exact."""
import dataclasses
import json
import math

import numpy as np
import pytest

from isobench.measure.timing import Stopwatch, Timeline, percentile, summarise, time_to_target
from isobench.results import FrameworkSettings, Metrics
from isobench.runner.inputs import write_inputs
from isobench.runner.worker import WorkerRun, train
from isobench.workloads import get_workload


class FakeClock:
    """Time moves only when a fake call says so."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float, value=None):
        self.now += seconds
        return value


def test_stopwatch_keeps_phases_steps_epochs_and_evaluations_apart():
    clock = FakeClock()
    watch = Stopwatch(clock)
    assert watch.phase("import", clock.spend, 2.0, {"version": "1"}) == {"version": "1"}
    watch.phase("build", clock.spend, 0.25)
    for epoch_steps in ([0.5, 0.125, 0.0625], [0.125, 0.25, 0.0625]):  # the last batch of each epoch is partial
        watch.start_epoch()
        for i, seconds in enumerate(epoch_steps):
            watch.step(i < 2, clock.spend, seconds)
            clock.spend(0.03125)  # between steps (batch slicing, loss check): training time, not step time
        watch.end_epoch()
        watch.evaluate(clock.spend, 1.0)  # evaluation: kept out of training time
    t = watch.timeline
    assert (t.import_s, t.build_s, t.eval_s) == (2.0, 0.25, [1.0, 1.0])
    assert t.step_s == [0.5, 0.125, 0.0625, 0.125, 0.25, 0.0625] and t.full == [True, True, False] * 2
    assert t.epoch_train_s == [0.6875 + 0.09375, 0.6875 + 0.09375 + 0.4375 + 0.09375]

    s = summarise(t, samples=1000, time_to_target_s=t.epoch_train_s[1])
    assert set(s) <= {f.name for f in dataclasses.fields(Metrics)}  # the worker passes them on as they are
    # steady: full batches after the first step: 0.125, 0.125, 0.25 -> median 0.125
    assert (s["first_step_s"], s["step_time_median_s"], s["compile_s"]) == (0.5, 0.125, 0.375)
    assert s["step_time_p10_s"] == 0.125 and s["step_time_p90_s"] == 0.125 + 0.8 * 0.125  # linear interpolation
    assert (s["train_time_s"], s["eval_s"], s["eval_total_s"]) == (1.3125, 1.0, 2.0)
    assert s["throughput_samples_s"] == 1000 / 1.3125 and s["time_to_target_s"] == 1.3125
    assert s["step_times_s"] == t.step_s and s["epoch_train_s"] == t.epoch_train_s


def test_a_failed_phase_keeps_no_time():
    clock = FakeClock()
    watch = Stopwatch(clock)

    def fail():
        clock.spend(1.0)
        raise ImportError("no framework")

    with pytest.raises(ImportError):
        watch.phase("import", fail)
    assert math.isnan(watch.timeline.import_s)


def test_without_steady_steps_the_median_is_nan_and_compile_cost_zero():
    s = summarise(Timeline(step_s=[0.5], full=[True], epoch_train_s=[0.5], eval_s=[0.25]), samples=32)
    assert math.isnan(s["step_time_median_s"]) and s["compile_s"] == 0.0 and math.isnan(percentile([], 50))


def test_compile_cost_is_never_negative():
    s = summarise(Timeline(step_s=[0.125, 0.25, 0.25], full=[True] * 3, epoch_train_s=[0.625], eval_s=[0.0]), 96)
    assert s["compile_s"] == 0.0


@pytest.mark.parametrize("values, target, lower, expected", [
    ([0.5, 0.8, 0.9], 0.8, False, 2.0),    # accuracy: at least the target, first met at epoch 2
    ([0.5, 0.7, 0.79], 0.8, False, None),  # never met
    ([2.0, 0.9, 0.4], 1.0, True, 2.0),     # loss: at most the target
    ([0.5, 0.9], None, False, None),       # the workload has no target
])
def test_time_to_target_is_the_training_time_at_the_end_of_the_first_epoch_that_met_it(values, target, lower,
                                                                                         expected):
    assert time_to_target([1.0, 2.0, 3.0][:len(values)], values, target, lower) == expected


class FakeTrainer:
    """Holds the neutral weights; every call spends a fixed time on the fake clock."""
    FIRST, FULL, PARTIAL, EVAL = 0.5, 2.0 ** -8, 2.0 ** -10, 0.25

    def __init__(self, clock, params, batch_size):
        self.clock, self._params, self.batch_size = clock, params, batch_size
        self.steps = self.evaluations = 0

    def train_step(self, idx, lr):
        self.steps += 1
        full = len(idx) == self.batch_size
        return self.clock.spend(self.FIRST if self.steps == 1 else self.FULL if full else self.PARTIAL, 1.0)

    def evaluate(self):
        self.evaluations += 1
        return self.clock.spend(self.EVAL, (1.0 / self.evaluations, [0.7, 0.85, 0.9, 0.9, 0.9, 0.9][self.evaluations - 1]))

    def params(self):
        return self._params

    def device_peak_bytes(self):
        return None


class FakeBackend:
    display, install_hint = "Fake", "none"

    def __init__(self, clock):
        self.clock = clock

    def setup(self, threads, device="cpu"):
        return self.clock.spend(2.0, FrameworkSettings(version="0.0", intra_op_threads=threads))

    def build(self, workload, params, data, mode, precision="fp32", device="cpu", optimizer="neutral"):
        return self.clock.spend(1.0, FakeTrainer(self.clock, params, workload.batch_size))


def test_the_worker_reports_what_its_clock_read(tmp_path, capsys):
    workload = dataclasses.replace(get_workload("seed-mlp"), epochs=2)  # 1438 samples: 44 full batches + 30
    inputs = write_inputs(workload, tmp_path / "inputs.npz")
    task = {"spec": {"framework": "fake", "mode": "eager", "repeat": 0, "threads": 1}, "inputs": str(inputs)}
    clock, run = FakeClock(), WorkerRun()
    m = train(task, workload, FakeBackend(clock), run, clock=clock)
    assert isinstance(m, Metrics) and run.settings.framework == FrameworkSettings(version="0.0", intra_op_threads=1)
    assert run.settings.peak_reset is not None and run.settings.gc_frozen_objects > 0
    assert run.fingerprints["loaded_weights"] == run.fingerprints["init_weights"]
    epoch = 44 * FakeTrainer.FULL + FakeTrainer.PARTIAL
    assert (m.import_s, m.build_s, m.first_step_s, m.steps, m.samples) == (2.0, 1.0, 0.5, 90, 2876)
    assert m.step_time_median_s == m.step_time_p10_s == m.step_time_p90_s == FakeTrainer.FULL
    assert m.compile_s == 0.5 - FakeTrainer.FULL
    assert m.epoch_train_s == [epoch - FakeTrainer.FULL + 0.5, 2 * epoch - FakeTrainer.FULL + 0.5]
    assert m.train_time_s == m.epoch_train_s[-1] and m.throughput_samples_s == 2876 / m.train_time_s
    assert (m.eval_s, m.eval_total_s) == (0.25, 0.5)
    assert m.time_to_target_s == m.epoch_train_s[1]  # seed-mlp's target: accuracy 0.8, met after epoch 2
    assert (m.epoch_test_accuracies, m.epoch_test_losses, m.best_test_metric) == ([0.7, 0.85], [1.0, 0.5], 0.85)
    assert m.epoch_losses == [1.0, 1.0] and m.process_peak_rss_bytes is None and m.device_peak_bytes is None
    assert np.all(np.array(m.step_times_s[1:]) <= FakeTrainer.FULL)
    # no progress event: an epoch of 0.92 s (fake clock) is shorter than the interval, and none after the last
    assert capsys.readouterr().out.count('"event": "epoch"') == 0


def test_a_long_training_reports_progress_at_most_every_interval(tmp_path, capsys):
    workload = dataclasses.replace(get_workload("seed-mlp"), epochs=6)
    clock = FakeClock()
    train({"spec": {"framework": "fake", "mode": "eager", "repeat": 0, "threads": 1},
           "inputs": str(write_inputs(workload, tmp_path / "inputs.npz"))}, workload, FakeBackend(clock), clock=clock)
    events = [json.loads(line.removeprefix("ISOBENCH ")) for line in capsys.readouterr().out.splitlines()]
    # epochs end (evaluation included) at 0.92, 1.34, 1.76, 2.18, 2.60, 3.02 s on the fake clock: an event after
    # epoch 2 (1 s after the start) and epoch 5 (1 s after that one), none after the last
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [2, 5]
