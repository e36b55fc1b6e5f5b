"""Setup is timed phase by phase (issue 22: "nobody can see why" setup takes seconds): summary.json's
timing.setup and the report's line add up to setup_s."""
from __future__ import annotations

import dlkit
from fakedata import make_class_folders


def test_setup_is_timed_phase_by_phase_in_the_summary_and_report(tmp_path):
    data = make_class_folders(tmp_path / "small", ("ants", "bees"), per_class=4, size=20)
    run = dlkit.train(data=str(data), model="softmax", epochs=1, workers=0, tensorboard=False, disk_cache=False,
                      quiet=True, out=str(tmp_path / "timed"))
    timing = run.summary["timing"]
    phases = timing["setup"]
    assert list(phases) == ["start-up", "devices", "data", "model", "probes", "batches, optimizer, run folder"]
    assert all(v >= 0 for v in phases.values()) and phases["start-up"] > 0
    assert abs(sum(phases.values()) - timing["setup_s"]) < 0.02  # the phases are what setup_s is made of
    report = (run.dir / "report.html").read_text()
    assert "setup, phase by phase" in report and f"data {phases['data']:.2f} s" in report
