"""The sweep's config (grid expansion, --set, checks that name the field) and its derived
metrics, on the real tiny model's config; no Ray, no MLflow."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pipeline.models import model_config
from pipeline.sweep.config import SweepConfig, SweepConfigError, apply_overrides
from pipeline.sweep.metrics import relative_metrics, throughput
from pipeline.sweep.report import point_name
from pruning import PruningConfig

REPO = Path(__file__).resolve().parents[2]
BASE = {"model": "tiny:qwen2_vl", "tasks": [{"name": "pope", "data": "lmms-lab/POPE"}],
        "grid": {"methods": ["vlm_pruner", "fastv"], "pruning_rates": [0.5, 0.889]}}


def sweep_main():
    spec = importlib.util.spec_from_file_location("sweep_job", REPO / "jobs" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_grid_is_the_baseline_then_every_combination():
    values = apply_overrides(BASE, ["grid.layers=[1, 2]", "grid.params={vlm_pruner: {token_batch: [8, 16]}}"])
    points = SweepConfig.from_dict(values).points()
    assert points[0] == PruningConfig.none()
    assert len(points) == 1 + 2 * 2 * 2 + 2 * 2  # rates x layers (x token_batch for vlm_pruner)
    assert PruningConfig(method="vlm_pruner", pruning_rate=0.889, layer=1, params={"token_batch": 8}) in points
    assert len(set(points)) == len(points)
    names = [point_name(p, True, ["token_batch"]) for p in points]
    assert names[0] == "none" and "vlm_pruner-0.889-L1-token_batch=8" in names
    assert len(set(names)) == len(names)


def test_baseline_listed_or_layer_equal_to_default_adds_no_duplicate():
    values = apply_overrides(BASE, ["grid.methods=[none, fastv]", "grid.layers=[2]"])
    assert len(SweepConfig.from_dict(values).points()) == 1 + 2


def test_set_parses_yaml_and_indexes_lists():
    values = apply_overrides(BASE, ["tasks.0.limit=3", "resources.frames=8", "mlflow.experiment=x"])
    config = SweepConfig.from_dict(values)
    assert config.tasks[0].limit == 3 and config.resources.frames == 8 and config.mlflow.experiment == "x"
    assert BASE["tasks"][0] == {"name": "pope", "data": "lmms-lab/POPE"}  # the input is not changed
    with pytest.raises(SweepConfigError, match=r"--set tasks.4.limit: '4' is no index of a list of 1"):
        apply_overrides(BASE, ["tasks.4.limit=3"])
    with pytest.raises(SweepConfigError, match="expected key=value"):
        apply_overrides(BASE, ["grid.methods"])


@pytest.mark.parametrize("override, field, allowed", [
    ("grid.methods=[vlm_pruner, fastvv]", "grid.methods[1]", "allowed: cdpruner, dart, divprune, dycoke, fastv"),
    ("grid.pruning_rates=[0.5, 1.5]", "grid.pruning_rates[1]", "in [0, 1)"),
    ("grid.layers=[-1]", "grid.layers[0]", "integer >= 0 for vlm_pruner"),
    ("grid.params={vlm_pruner: {stages: [[3, 2]]}}", "grid.params.vlm_pruner.stages[0]", "layers must increase"),
    ("grid.params={vlm_pruner: {positions: [shifted]}}", "grid.params.vlm_pruner.positions[0]",
     "one of original, renumbered"),
    ("grid.params={vlm_pruner: {token_batch: [0]}}", "grid.params.vlm_pruner.token_batch[0]", "integer >= 1"),
    ("grid.params={vlm_pruner: {speed: [1]}}", "grid.params.vlm_pruner.speed[0]", "its parameters: adaptive_lambda, merge_weight"),
    ("grid.params={random: {seed: [1]}}", "grid.params.random", "not in grid.methods"),
    ("tasks.0.limit=0", "tasks[0].limit", "integer >= 1"),
    ("tasks=[]", "tasks", "at least one"),
    ("resources.batch_size=two", "resources.batch_size", "integer >= 1"),
    ("resources.dtype=float17", "resources.dtype", "unknown dtype"),
    ("resources.gpus=1", "resources.gpus", "allowed: actors, num_gpus"),
    ("grid.rates=[0.5]", "grid.rates", "allowed: methods, pruning_rates, layers, params"),
    ("scoring=strict", "scoring", "one of lmms_eval, lenient"),
])
def test_a_bad_entry_names_its_field_and_what_it_allows(override, field, allowed):
    with pytest.raises(SweepConfigError) as err:
        SweepConfig.from_dict(apply_overrides(BASE, [override]))
    assert err.value.field == field
    assert allowed in str(err.value)


def test_scoring_defaults_to_lmms_eval_and_is_logged_with_its_release():
    from pipeline.sweep.tracking import point_key

    config = SweepConfig.from_dict(BASE)
    assert config.scoring == "lmms_eval" and config.flat()["scoring"] == "lmms_eval 0.7.3"
    lenient = SweepConfig.from_dict(apply_overrides(BASE, ["scoring=lenient"]))
    assert lenient.flat()["scoring"] == "lmms_eval 0.7.3 + lenient"
    # points scored another way are other results: a sweep never reuses them
    assert point_key(config, PruningConfig.none()) != point_key(lenient, PruningConfig.none())


def test_check_against_the_model_tasks_and_data(tmp_path):
    tiny = model_config("tiny:qwen2_vl")  # 4 decoder layers
    config = SweepConfig.from_dict(apply_overrides(BASE, ["grid.layers=[3, 4]"]))
    with pytest.raises(SweepConfigError, match=r"grid.layers\[1\]: layer must be in \[0, 3\]"):
        config.check(tiny, root=tmp_path)
    config = SweepConfig.from_dict(apply_overrides(BASE, ["tasks.0.name=popee"]))
    with pytest.raises(SweepConfigError, match=r"tasks\[0\].name: unknown task 'popee'; known tasks: egoplan"):
        config.check(tiny, root=tmp_path)
    missing = SweepConfig.from_dict(apply_overrides(BASE, ["tasks.0.data=samples/here/pope"]))
    with pytest.raises(SweepConfigError, match=r"tasks\[0\].data: 'samples/here/pope' is no file or folder"):
        missing.check(tiny, root=tmp_path)
    SweepConfig.from_dict(BASE).check(tiny, root=tmp_path)  # a hub id is taken as it is
    generated = SweepConfig.from_dict(apply_overrides(BASE, ["tasks.0.data=samples/here/pope",
                                                             "tasks.0.samples=2"]))
    generated.check(tiny, root=tmp_path)
    assert generated.data_path(generated.tasks[0], tmp_path) == tmp_path / "samples/here/pope"
    (tmp_path / "configs" / "samples" / "here" / "pope").mkdir(parents=True)
    assert generated.data_path(generated.tasks[0], tmp_path, tmp_path / "configs") == \
        tmp_path / "configs/samples/here/pope"  # next to the config file wins when it exists


def test_main_refuses_a_bad_config_with_exit_code_2_before_any_run(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("model: tiny:qwen2_vl\ntasks: [{name: pope, data: lmms-lab/POPE}]\n"
                      "grid: {methods: [vlm_pruner], pruning_rates: [0.889]}\n"
                      f"mlflow: {{tracking_uri: 'sqlite:///{tmp_path}/mlflow.db'}}\n")
    code = sweep_main()(["--config", str(config), "--set", "grid.pruning_rates=[0.889, 1.0]"])
    assert code == 2
    assert "grid.pruning_rates[1]: pruning_rate must be a number in [0, 1), got 1.0" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


def test_relative_score_is_the_papers_avg_percent():
    baseline = {"pope/score": 80.0, "mme/score": 1500.0, "egoschema/score": 0.0, "prefill_s": 0.4, "ttft_s": 0.5}
    point = {"pope/score": 60.0, "mme/score": 1650.0, "egoschema/score": 0.0, "prefill_s": 0.1, "ttft_s": 0.25}
    out = relative_metrics(point, baseline, ["pope", "mme", "egoschema"])
    assert out["pope/relative"] == pytest.approx(75.0) and out["mme/relative"] == pytest.approx(110.0)
    assert "egoschema/relative" not in out  # the baseline scored 0: no ratio
    assert out["avg_relative"] == pytest.approx(92.5) and out["relative_tasks"] == 2
    assert out["prefill_speedup"] == pytest.approx(4.0) and out["ttft_speedup"] == pytest.approx(2.0)
    assert "avg_relative" not in relative_metrics(point, {"pope/score": 0.0}, ["pope"])


def test_throughput_counts_each_batch_once():
    pair = {"error": None, "generate_s": 2.0, "batch_size": 2}  # two samples in one 2 s generate call
    rows = [pair, pair, {"error": None, "generate_s": 1.0, "batch_size": 1},
            {"error": "video: missing", "generate_s": None, "batch_size": None}]
    assert throughput(rows) == pytest.approx(3 / 3.0)  # 3 samples in 2 s + 1 s


def test_score_grid_puts_each_method_on_a_row_and_each_rate_in_a_column():
    from pipeline.sweep.report import PointSummary, score_grid
    from pruning import PruningConfig

    def point(config, score):
        name = point_name(config, False)
        return PointSummary(name, name, config, {"pope/score": score}, "run", True)

    points = [point(PruningConfig.none(), 80.0),
              point(PruningConfig(method="fastv", pruning_rate=0.5), 70.0),
              point(PruningConfig(method="fastv", pruning_rate=0.889), 50.0),
              point(PruningConfig(method="random", num_retain=8), 30.0)]
    lines = score_grid(points, "pope").splitlines()
    assert lines[2] == "| method | 0% | 50.0% | 88.9% | keep 8 |"
    assert lines[4:] == ["| none | 80.0 |  |  |  |", "| fastv |  | 70.0 | 50.0 |  |", "| random |  |  |  | 30.0 |"]
