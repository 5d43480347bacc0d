"""The leaderboard's own arithmetic (chapter 5): forward-pass ratios, the sequence choice, audit verdicts, images."""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from rsbook.core.certify import Smooth
from rsbook.infra.artifacts import ArtifactStore
from rsbook.papers import leaderboard as lb


def _log(samples, n=None):
    n = len(samples) if n is None else n
    return pd.DataFrame({"idx": range(n), "label": 0, "predict": 0, "radius": 0.5, "correct": 1, "samples": samples})


def test_the_pass_ratio_is_fixed_n_over_what_was_drawn_and_a_given_class_draws_no_selection():
    rows = [lb.Row("a", "x", "fixed noise"), lb.Row("b", "x", "class given"), lb.Row("c", "x", "transductive", source="derived", of="a")]
    logs = {"a": _log([1100, 900]), "b": _log([500, 500]), "c": _log([1, 1])}
    r = lb.pass_ratio(logs, rows, n0=100, n_max=10_000)
    # by hand: a: 2 x 10,100 / 2,000; b: 2 x 10,000 / 1,000; all: 40,200 / 3,000; the derived row draws nothing
    assert r["a"] == pytest.approx(20_200 / 2000) and r["b"] == pytest.approx(20.0) and r["all"] == pytest.approx(40_200 / 3000)
    assert "c" not in r


def test_the_sequence_with_fewer_passes_is_chosen_and_a_tie_keeps_the_beta_binomial_one():
    assert lb.chosen_sequence({"beta-binomial": _log([10, 10]), "betting": _log([9, 10])}) == "betting"
    assert lb.chosen_sequence({"beta-binomial": _log([10, 10]), "betting": _log([11, 9])}) == "beta-binomial"


def test_an_audit_holds_only_when_its_control_finds_violations():
    row = lambda v, c, fa=1e-4: pd.Series({"violations": v, "control violations": c, "expected false alarms": fa})  # noqa: E731
    assert lb.audit_check(row(0, 5)).outcome is True
    assert lb.audit_check(row(0, 0)).outcome is None  # the control found nothing: the audit audits nothing
    assert lb.audit_check(row(2, 5)).outcome is False


def test_calibration_images_are_never_leaderboard_images():
    for profile in ("smoke", "cpu"):
        board = set(lb.leaderboard_images(profile).indices.tolist())
        for cfg in lb.calibration_configs(profile):
            calib = lb.calibration_images(cfg).indices.tolist()
            assert len(calib) == cfg.images and not board & set(calib)
            assert all((i - cfg.start) % cfg.every == 0 for i in calib)


def test_every_row_names_a_guarantee_and_a_derived_row_its_base():
    for profile in ("smoke", "dry_run", "cpu", "paper"):
        rows = lb.rows(profile)
        names = {r.name for r in rows}
        assert all(r.guarantee in lb.GUARANTEES for r in rows)
        assert all(r.of in names for r in rows if r.source == "derived")
    with pytest.raises(ValueError, match="guarantee"):
        lb.Row("x", "y", "probably fine")


def test_the_board_counts_abstentions_as_wrong_in_clean_accuracy():
    rows = [lb.Row("a", "x", "fixed noise")]
    log = pd.DataFrame({"idx": [0, 1, 2, 3], "label": [1, 1, 1, 1], "predict": [1, -1, 2, 1], "radius": [0.6, 0.0, 0.3, 0.2],
                        "correct": [1, 0, 0, 1], "samples": [10, 10, 10, 10], "time": [1.0] * 4})
    b = lb.board({"a": log}, rows)
    assert b.loc["a", "clean acc"] == 0.5 and b.loc["a", "abstain"] == 0.25
    assert b.loc["a", "r = 0.25"] == 0.25 and b.loc["a", "ACR"] == pytest.approx((0.6 + 0.2) / 4)


class _Threshold(torch.nn.Module):
    """Class 1 where pixel (0, 0, 0) exceeds ``t``, else class 0 (ten logits): the l2 distance of an
    image to the other class is ``|x_000 - t|``, and Gaussian smoothing keeps the same boundary."""

    def __init__(self, t: float):
        super().__init__()
        self.t = t
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        z = 20 * (x[:, 0, 0, 0] - self.t)
        return torch.cat([torch.stack([-z, z], 1), torch.full((len(x), 8), -50.0)], 1)


class _Images:
    def __init__(self, x):
        self.x, self.indices = x, torch.arange(len(x))

    def __getitem__(self, i):
        return self.x[i], 0

    def __len__(self):
        return len(self.x)


@dataclass(frozen=True)
class _Cert:
    seed: int = 0


def test_the_audit_attacks_a_certified_point_and_catches_a_radius_past_the_boundary(tmp_path, monkeypatch):
    """Two copies of an image at l2 distance 0.5 from the other class: an honest radius 0.3 has no
    violation and its 3x control finds the boundary; a broken radius 1.0 is caught (smoke never
    certifies a point, so this is where the audit's attack-and-ask path runs in the fast tests)."""
    x = torch.full((2, 3, 32, 32), 0.5)
    x[:, 0, 0, 0] = 0.0
    row = next(r for r in lb.rows("smoke") if r.source == "sequential" and r.sigma == 0.25)
    monkeypatch.setattr(lb, "_model_and_smooth", lambda *a, **k: (None, lambda: Smooth(_Threshold(0.5), 10), "noise"))
    monkeypatch.setattr(lb, "leaderboard_images", lambda profile: _Images(x))
    monkeypatch.setattr(lb, "store", lambda profile: ArtifactStore(tmp_path))
    radius = pd.DataFrame({"idx": [0, 1], "label": [0, 0], "radius": [0.3, 1.0], "correct": [1, 1]})
    cfg = lb.Audit(_Cert(), row.name, n=200, alpha=1e-6, steps=9, factor=3.0, attack_steps=20)
    a = lb.audit(cfg, radius, "smoke", progress=False)
    honest, broken = a.set_index("idx").loc[0], a.set_index("idx").loc[1]
    assert 0.5 <= honest["wrong_at"] <= 0.9, a  # past the true distance, within the 3x control's reach
    assert broken["wrong_at"] < 1.0, a  # the broken certificate is violated
    counts = lb.audit_table({"x": a}, 3.0, 1e-6).loc["x"]
    assert counts["violations"] == 1 and counts["control violations"] == 2
