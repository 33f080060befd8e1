"""Model families: found by name, what each refuses up front (exit status 2 before any component), what init
writes. The families' training and serving run in tests/test_tasks.py (one pipeline run per family)."""

import io

import pytest

from contract.config import load_config
from models.trainer import families
from pipeline import inputs
from runners import local
from schemas.init import choose_family
from tests.datasets import write_linear


def test_every_family_module_is_found_by_its_name():
    assert families.names() == ["auto", "dnn", "gbdt", "linear"]
    assert [f.name for f in families.candidates()] == ["dnn", "gbdt", "linear"]
    with pytest.raises(ValueError, match="'xgboost' is not a model family; one of auto, dnn, gbdt, linear"):
        families.get("xgboost")


@pytest.mark.parametrize("model,strategy,allowed", [
    ("dnn", "mirrored", True), ("linear", "parameter_server", True), ("gbdt", "default", True),
    ("gbdt", "mirrored", False), ("gbdt", "parameter_server", False), ("auto", "mirrored", False),
    ("auto", "default", True)])
def test_each_family_trains_under_the_strategies_it_can_and_names_the_setting_otherwise(model, strategy, allowed):
    config = load_config(None, [f"training.model={model}", f"training.strategy={strategy}"])
    problems = families.get(model).problems(config)
    assert (problems == []) is allowed, problems
    if not allowed:
        assert any(f"training.strategy {strategy} is not available with training.model {model}" in p
                   for p in problems), problems


def _preflight(tmp_path, *settings):
    config = load_config(None, [f"output_dir={tmp_path / 'out'}", *settings])
    out = io.StringIO()
    return local.run(config, out=out), out.getvalue()


def test_an_unknown_family_stops_the_run_before_any_component(tmp_path):
    status, printed = _preflight(tmp_path, "training.model=xgboost")
    assert status == 2
    assert printed == "error: training.model: 'xgboost' is not a model family; one of auto, dnn, gbdt, linear\n"


def test_a_family_strategy_combination_that_cannot_work_stops_the_run(tmp_path):
    status, printed = _preflight(tmp_path, "training.model=gbdt", "training.strategy=parameter_server")
    assert status == 2
    assert printed.startswith("error: training.strategy parameter_server is not available with training.model "
                              "gbdt: a decision forest trains on one machine"), printed


def test_auto_on_too_few_rows_says_how_many_it_needs(tmp_path):
    """180 rows hash-split 4:1: about 144 to train, 28 of them held out; auto needs 30 (150 training rows)."""
    data = write_linear(str(tmp_path / "flats"))
    settings = [f"data.input_base={data}", "data.pattern=*", "features.task=regression",
                "features.label_column=price", "features.numeric=[size_m2, age_years]", "features.bucketized=[]",
                "features.categorical=[rooms]", "features.classes=[]", "features.label_relative_to=",
                "evaluator.slice_features=[]", f"schema_file={_schema(tmp_path, data)}"]
    status, printed = _preflight(tmp_path, "training.model=auto", *settings)
    assert status == 2, printed
    assert "training.model auto holds out 0.2 of the train split to choose the family:" in printed
    assert "fewer than the 30 a choice needs. Give it at least 150 training rows" in printed
    # With 0.3 held out (43 rows) the same data passes the preflight.
    inputs.check_inputs(load_config(None, [f"output_dir={tmp_path / 'out'}", "training.model=auto",
                                           "training.auto_validation_share=0.3", *settings]))


def _schema(tmp_path, data: str) -> str:
    """init on the same data: its schema, and the family it wrote (linear: too few rows for auto)."""
    import contextlib

    import yaml

    from cli import schema as schema_cli

    out = tmp_path / "init"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert schema_cli.main(["init", "--data-root", data, "--label", "price", "--out", str(out)]) == 0
    with open(out / "config.yaml", encoding="utf-8") as f:
        assert yaml.safe_load(f)["training"]["model"] == "linear"
    assert "model family: linear (only 144 training rows, too few for auto to hold out 30" in printed.getvalue()
    return str(out / "schema.pbtxt")


@pytest.mark.parametrize("rows,family", [(144, "linear"), (149, "linear"), (150, "auto"), (100_000, "auto")])
def test_init_chooses_auto_when_it_can_hold_out_enough_rows_else_linear(rows, family):
    chosen, why = choose_family(rows)
    assert chosen == family
    assert str(rows) in why
