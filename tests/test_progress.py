"""tasks.progress.Progress: plain log lines when stderr is not a terminal, a bar when it is."""

import io
import re
import sys

import pytest

import tasks.progress as progress_mod
from tasks.progress import Progress

LINE = re.compile(r"^\[explain\] (\d+)/128 images \((\d+) %\) elapsed (\d+) s, eta (\d+) s$")


class Clock:
    """A fake time.monotonic: 0.3 s per image."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress_mod.time, "monotonic", c)
    return c


def _run(clock, total=128, step=1):
    bar = Progress(total, "explain", unit="images")
    for _ in range(0, total, step):
        clock.t += 0.3 * step
        bar.update(step)
    bar.close()


def test_plain_lines_to_a_log_file(tmp_path, monkeypatch, clock):
    log = open(tmp_path / "stage.log", "w")
    monkeypatch.setattr(sys, "stderr", log)
    _run(clock)
    log.close()
    lines = (tmp_path / "stage.log").read_text().splitlines()
    assert lines[0] == "[explain] start 0/128 images"
    assert lines[-1] == "[explain] done 128/128 images (100 %) in 38 s"
    middle = [LINE.match(ln) for ln in lines[1:-1]]
    assert all(middle) and len(middle) == 9  # 10 %, 20 %, ..., 90 %
    done = [int(m[1]) for m in middle]
    assert done == [13, 26, 39, 52, 64, 77, 90, 103, 116]  # first count at or past each tenth
    for m in middle:
        d = int(m[1])
        assert int(m[2]) == int(100 * d / 128)
        assert abs(int(m[3]) - 0.3 * d) <= 0.5  # elapsed
        assert abs(int(m[4]) - 0.3 * (128 - d)) <= 1  # eta from the mean rate
    assert "\r" not in (tmp_path / "stage.log").read_text()  # no bar


def test_plain_lines_under_capfd(capfd, clock):
    _run(clock, total=5)  # every update crosses at least one tenth: one line each
    out, err = capfd.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == "[explain] start 0/5 images"
    assert [ln.split()[1] for ln in lines[1:-1]] == ["1/5", "2/5", "3/5", "4/5"]
    assert lines[-1].startswith("[explain] done 5/5 images (100 %)")


def test_big_jumps_and_an_unfinished_stage(capsys, clock):
    bar = Progress(1000, "score (parts)")
    bar.update(250)  # crosses 10 % and 20 % at once: one line
    bar.update(1)
    bar.update(400)
    bar.close()
    bar.close()  # once only
    bar.update(5)  # ignored after close
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "[score (parts)] start 0/1000"
    assert [ln.split()[2] for ln in lines[1:-1]] == ["250/1000", "651/1000"]
    assert lines[-1] == "[score (parts)] stopped at 651/1000 (65 %) in 0 s"


def test_context_manager_closes_on_error(capsys, clock):
    with pytest.raises(RuntimeError):
        with Progress(3, "ingest rsna") as bar:
            bar.update()
            raise RuntimeError("boom")
    assert capsys.readouterr().err.splitlines()[-1] == "[ingest rsna] stopped at 1/3 (33 %) in 0 s"


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_the_bar_and_no_plain_lines(monkeypatch, clock):
    tty = FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    _run(clock, total=20)
    text = tty.getvalue()
    assert "explain:" in text and "/20 [" in text  # tqdm's bar (redraws are throttled)
    assert "[explain]" not in text and "start 0/" not in text


def test_the_deployed_audit_bench_reads_the_stage_end_lines(capsys, clock):
    """bench.deployed_audit times an audit's stages from these lines: its parser must read what
    Progress writes (a finished stage, a stopped one, one that ran twice), and nothing else."""
    from bench.deployed_audit import stage_times

    _run(clock, total=20)                                # [explain] ... in 6 s
    bar = Progress(1000, "score (parts)")
    clock.t += 12.0
    bar.update(250)
    bar.close()                                          # stopped at 250/1000 ... in 12 s
    _run(clock, total=10)                                # [explain] again: 3 s
    stages = stage_times(capsys.readouterr().err)
    assert stages == {
        "explain": {"seconds": 9, "done": 30, "total": 30, "unit": "images"},
        "score (parts)": {"seconds": 12, "done": 250, "total": 1000, "unit": ""}}


def test_the_progress_artifact_is_sent_at_most_every_two_seconds_and_ends_at_the_count(
        prefect_harness, clock):
    """Inside a run the artifact is an API call and a database write per update: at most one
    every ``ARTIFACT_EVERY_S`` seconds of the stage (not one per in-filler step), and the
    count the stage stopped at is the artifact's last value."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

    assert progress_mod.ARTIFACT_EVERY_S == 2.0

    @flow
    def stage():
        bar = Progress(500, "train inpainter (steps)")
        for _ in range(400):                                 # 0.13 s a step: 52 s
            clock.t += 0.13
            bar.update()
        bar.close()                                          # stopped at 400 of 500
        return bar.artifact_updates, bar._artifact

    sent, art_id = stage()
    assert art_id is not None
    assert 24 <= sent <= 28                                  # 52 s / 2 s, the last count
    with get_client(sync_client=True) as client:
        (art,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            id=ArtifactFilterId(any_=[art_id])))
    assert art.type == "progress" and float(art.data) == 80.0
