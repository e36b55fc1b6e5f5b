"""`dlkit ... --help` says true things once: metavars name what a flag takes, no "(default: None)" or a default given
twice, table defaults beside image ones, cv without the flags it sets itself, sweep's required --out shown required."""
import argparse
import re

import pytest

from dlkit.cli.main import TABLE_DEFAULTS, build_parser


def commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices


def help_of(command: str) -> str:
    return commands()[1][command].format_help()


def option(command: str, flag: str) -> argparse.Action:
    return next(a for a in commands()[1][command]._actions if flag in a.option_strings or a.dest == flag)


@pytest.mark.parametrize("command", ["train", "cv", "sweep"])
def test_config_flags_say_their_default_once_and_never_none(command):
    for action in commands()[1][command]._actions:
        text = action.help or ""
        assert "(default: None)" not in text and "(default: [])" not in text, (action.dest, text)
        assert len(re.findall(r"\bdefault\b[: ]", text)) <= 1 or "val_acc (classes, default)" in text, text


def test_metavars_name_what_the_flag_takes():
    assert option("train", "--models-from").metavar == "FILE"
    assert option("train", "--id-column").metavar == "COLUMN" and option("train", "--drop").metavar == "COLUMN"
    assert "--models-from FILE" in help_of("train")


def test_table_defaults_are_shown_beside_the_image_ones_and_match_the_tables_recipe():
    from dlkit.recipes import RECIPES

    recipe = RECIPES.get("table").values
    assert set(TABLE_DEFAULTS) == set(recipe)
    for name, value in recipe.items():
        assert str(value) in TABLE_DEFAULTS[name] or name in ("epochs", "batch_size"), name  # those two are fitted
    assert "tables: tabular" in option("cv", "model").help and "tables: 0.004" in option("cv", "lr").help


def test_cv_offers_folds_and_refit_as_its_own_and_not_the_fold_it_sets():
    text = help_of("cv")
    assert "--folds K" in text and "--refit" in text and "set by" not in text
    assert not re.search(r"--fold\b(?!s)", text)
    assert "train one fold" in help_of("train")  # train still trains a single fold by hand
    assert option("cv", "--out").help.startswith("the CV folder")


def test_sweep_shows_out_as_required():
    usage = " ".join(commands()[1]["sweep"].format_usage().split())  # as one line: argparse wraps it
    assert usage.startswith("usage: dlkit sweep --out SWEEP_DIR --param") and "[--out" not in usage
    assert option("sweep", "--out").help.startswith("required")


@pytest.mark.parametrize("command", ["train", "cv", "sweep", "predict", "models", "datasets", "summary",
                                     "tensorboard", "show-data", "runs", "compare"])
def test_every_argument_has_help(command):
    missing = [a.option_strings[0] if a.option_strings else a.dest
               for a in commands()[1][command]._actions if not a.help]
    assert not missing


def test_the_description_names_tables_too():
    parser, _ = commands()
    assert "tables" in parser.description and "image classifiers." not in parser.description
