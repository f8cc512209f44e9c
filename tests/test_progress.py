"""Progress bars redraw rarely when they write to a file instead of a terminal."""
import io

from pavenet.engine.logger import RunLogger
from pavenet.runtime.progress import LOG_INTERVAL_S, is_terminal, progress_bar


class TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


class ClosedStream:
    def isatty(self) -> bool:
        raise ValueError("I/O operation on closed file")


def redraws(stream: io.StringIO, steps: int, seconds_per_step: float, **kwargs) -> int:
    """Carriage-return records a bar writes for ``steps`` updates ``seconds_per_step`` apart
    (a fake clock, so the test does not sleep)."""
    bar = progress_bar(total=steps, file=stream, **kwargs)
    clock = [bar.start_t]
    bar._time = lambda: clock[0]
    for _ in range(steps):
        clock[0] += seconds_per_step
        bar.update(1)
    bar.close()
    return stream.getvalue().count("\r")


def test_a_file_gets_a_redraw_per_interval_not_per_step():
    # 120 one-second steps: the initial draw, one every 30 s (4) and the final state on close
    assert redraws(io.StringIO(), 120, 1.0) <= 1 + 120 / LOG_INTERVAL_S + 1
    last = io.StringIO()
    redraws(last, 120, 1.0)
    assert "120/120" in last.getvalue()


def test_a_terminal_redraws_every_step():
    assert redraws(TerminalStream(), 120, 1.0) >= 120


def test_the_caller_keeps_its_own_interval():
    assert redraws(io.StringIO(), 120, 1.0, mininterval=0.5) >= 120
    assert progress_bar(total=3, file=io.StringIO(), mininterval=2.0).mininterval == 2.0


def test_the_monitor_thread_waits_the_interval_too():
    assert progress_bar(total=3, file=io.StringIO()).maxinterval == LOG_INTERVAL_S
    assert progress_bar(total=3, file=io.StringIO(), mininterval=60.0).maxinterval == 60.0
    assert progress_bar(total=3, file=TerminalStream()).maxinterval == 10.0  # tqdm's default


def test_is_terminal():
    assert is_terminal(TerminalStream())
    assert not is_terminal(io.StringIO())
    assert not is_terminal(ClosedStream())
    assert not is_terminal(object())


def test_the_training_bar_follows_its_stream(tmp_path, monkeypatch):
    """120 one-second training steps (each sets the bar's losses and re-plans its length, as a
    time-budgeted run does) redraw a file's bar once per interval, a terminal's every step."""
    for stream, fewest, most in ((io.StringIO(), 1, 1 + 120 / LOG_INTERVAL_S + 1), (TerminalStream(), 120, 1000)):
        monkeypatch.setattr("sys.stderr", stream)
        logger = RunLogger(tmp_path, total_steps=120, start_step=0, enabled=True)
        clock = [logger._bar.start_t]
        logger._bar._time = lambda: clock[0]
        for step in range(120):
            clock[0] += 1.0
            logger.step(step, {"loss": 1.0, "loss_kpt": 0.5}, 1e-4)
            logger.set_total(240 - step)
        logger.close()
        assert fewest <= stream.getvalue().count("\r") <= most
        assert "loss=1" in stream.getvalue()
