"""One interface per chapter module (rsbook.papers): CHAPTER, settings, planned_work -> Plan, certification, claims."""

from pathlib import Path

import pytest

from rsbook.book.eta import Plan, Planned
from rsbook.infra.artifacts import config_key
from rsbook.papers import (appendix_sequential, appendix_speed, cohen2019, heat_smoothing, leaderboard, samplewise, score_denoising,
                          variational)

ARTIFACTS = Path(__file__).resolve().parents[1] / "book" / "artifacts"
CHAPTERS = [cohen2019, samplewise, score_denoising, heat_smoothing, variational, leaderboard, appendix_sequential]


def _committed(chapter: str) -> set[str]:
    """The artifact keys committed in ``book/artifacts/<chapter>/`` (``<key>.json`` beside each payload)."""
    return {p.stem for p in (ARTIFACTS / chapter).glob("*-*.json") if p.name.count(".") == 1}


@pytest.mark.parametrize("mod", CHAPTERS, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_every_chapter_module_offers_the_interface(mod):
    assert isinstance(mod.CHAPTER, str) and (ARTIFACTS / mod.CHAPTER).is_dir()
    for name in ("settings", "planned_work", "certification", "claims"):
        assert callable(getattr(mod, name, None)), f"{mod.__name__} has no {name}()"
    mod.settings("smoke")
    plan = mod.planned_work("smoke")
    assert isinstance(plan, Plan)
    assert plan.certifications and all(isinstance(p, Planned) for p in plan.certifications)
    assert all(isinstance(part, tuple) for part in (plan.trainings, plan.certifications, plan.other))


def test_appendix_speed_plans_its_benchmark_runs_and_they_are_committed():
    plan = appendix_speed.planned_work("smoke")
    assert isinstance(plan, Plan) and not plan.trainings and not plan.certifications
    assert list(plan.other) == appendix_speed.runs("smoke") + appendix_speed.denoised_runs("smoke") + appendix_speed.dual_runs("smoke")
    assert {config_key(c) for c in appendix_speed.planned_work("cpu").other} <= _committed(appendix_speed.CHAPTER)


def test_chapter_0_cpu_plan_names_only_committed_artifacts():
    plan = cohen2019.planned_work("cpu")
    folder = ARTIFACTS / cohen2019.CHAPTER
    for p in plan.certifications:
        assert (folder / f"{config_key(p.config)}.json").is_file(), p.config
    for c in plan.trainings:
        assert (folder / f"{config_key(c)}.json").is_file(), c
    assert not plan.other


def test_chapter_4_cpu_plan_is_exactly_its_committed_artifacts():
    # its selectors and its Experiment A and B logs are its own; the base classifiers are chapter 0's
    plan = variational.planned_work("cpu")
    planned = ({config_key(c) for c in plan.trainings} | {config_key(p.config) for p in plan.certifications}
               | {config_key(c) for c in plan.other})
    assert planned == _committed(variational.CHAPTER)
    bases = {config_key(c.base) for c in plan.trainings}
    assert bases <= _committed(cohen2019.CHAPTER)


def test_chapter_2_cpu_plan_is_exactly_its_committed_artifacts():
    # its MNIST pretraining, fine-tunings, level tables and certifications are its own; the CIFAR-10
    # pretraining (chapter 0's universal model) and DDRS's base models are chapter 0's
    plan = samplewise.planned_work("cpu")
    planned = ({config_key(c) for c in plan.trainings} | {config_key(p.config) for p in plan.certifications}
               | {config_key(c) for c in plan.other})
    assert planned == _committed(samplewise.CHAPTER)
    chapter0 = {config_key(samplewise.pretrain_config("cifar10", "cpu"))} | {config_key(samplewise.ddrs_config(ds, "cpu").model)
                                                                           for ds in samplewise.DATASETS}
    assert chapter0 <= _committed(cohen2019.CHAPTER)


def test_appendix_sequential_cpu_plan_is_exactly_its_committed_artifacts():
    # its reference logs and its benchmark run are its own; the models are chapter 0's
    plan = appendix_sequential.planned_work("cpu")
    planned = {config_key(p.config) for p in plan.certifications} | {config_key(c) for c in plan.other}
    assert planned == _committed(appendix_sequential.CHAPTER)
    assert {config_key(c) for c in plan.trainings} <= _committed(cohen2019.CHAPTER)


def test_appendix_sequential_logs_are_chapter_0s_configs_and_stores():
    a2 = appendix_sequential
    model = cohen2019.cifar_config(0.25, "cpu")
    assert a2.log_config(0.25, "sequential", "cpu") == cohen2019.sequential_config(model, 0.25, "cpu")
    assert a2.log_config(0.25, "fixed", "cpu") == cohen2019.certify_config(model, 0.25, "cpu")
    assert a2.log_config(0.25, "reference", "cpu") == a2.reference_config(0.25, "cpu")
    assert a2.log_store(0.25, "fixed", "cpu").root == cohen2019.store("cpu").root
    assert a2.log_store(0.25, "reference", "cpu").root == a2.store("cpu").root  # chapter 0 holds no N = 100,000 log at cpu
    with pytest.raises(ValueError, match="unknown kind"):
        a2.log_config(0.25, "adaptive", "cpu")


def test_a_plan_holds_tuples_of_planned_logs():
    cfg = cohen2019.certify_config(cohen2019.cifar_config(0.25, "cpu"), 0.25, "cpu")
    p = Planned(cfg, "cnn4", 500)
    plan = Plan(trainings=[cfg.model], certifications=[p])
    assert plan.trainings == (cfg.model,) and plan.certifications == (p,) and plan.other == ()
    assert Plan(certifications=[p], other=["attack"]).other == ("attack",)
    with pytest.raises(TypeError, match="Planned"):
        Plan(certifications=[cfg])


def test_smooth_for_builds_once_per_key():
    from rsbook.papers.common import smooth_for

    built = []

    def build():
        built.append(object())
        return built[-1]

    key = ("test_papers", "smooth_for", id(built))
    first = smooth_for(key, build)
    assert smooth_for(key, build) is first and len(built) == 1
    assert smooth_for(key + ("other",), build) is not first and len(built) == 2


def test_chapter_0_certification_loads_the_committed_logs_with_one_smooth_per_model():
    # the published cpu logs load without certifying anything: the same configs the notebook used
    import pandas as pd

    from rsbook.runs.runner import read_log

    st = cohen2019.store("cpu")
    model = cohen2019.cifar_config(0.50, "cpu")
    fixed = cohen2019.certification(model, 0.50, "cpu", st, progress=False)
    grid = cohen2019.certification(model, 0.25, "cpu", st, progress=False, every=cohen2019.grid_every("cpu"))
    seq = cohen2019.certification(model, 0.50, "cpu", st, progress=False, sequential=True)
    for log, cfg in ((fixed, cohen2019.certify_config(model, 0.50, "cpu")),
                     (grid, cohen2019.certify_config(model, 0.25, "cpu", every=cohen2019.grid_every("cpu"))),
                     (seq, cohen2019.sequential_config(model, 0.50, "cpu"))):
        path, _ = st.paths(cfg, "tsv")
        pd.testing.assert_frame_equal(log, read_log(path, cfg.noise))
    assert len(fixed) == 500 and len(grid) == 100
    assert cohen2019.smooth(model, st) is cohen2019.smooth(model, st)


def test_the_leaderboard_cpu_plan_is_exactly_its_committed_artifacts():
    # its calibration runs, its rows' sequential logs (at the sequence the calibration chose) and its audits;
    # the models are the chapters' own, in their stores
    plan = leaderboard.planned_work("cpu")
    planned = {config_key(p.config) for p in plan.certifications} | {config_key(c) for c in plan.other}
    assert planned == _committed(leaderboard.CHAPTER)
    stores = {cohen2019.CHAPTER, heat_smoothing.CHAPTER, samplewise.CHAPTER, score_denoising.CHAPTER}
    assert {config_key(c) for c in plan.trainings} <= set().union(*(_committed(ch) for ch in stores))
