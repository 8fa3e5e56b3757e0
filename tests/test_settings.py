"""Settings described once: flags, tuner space and hparams.json follow the constructors."""

import dataclasses
import inspect

import keras_tuner as kt
import pytest

from relperf_tf.app import settings, training, tuning
from relperf_tf.app.model_settings import MODEL_SETTINGS
from relperf_tf.layers import TransformerBlock
from relperf_tf.models import MODEL_NAMES, PerformerClassifier


def test_each_model_setting_takes_its_default_from_its_constructor():
    for setting in MODEL_SETTINGS:
        parameter = inspect.signature(setting.owner.__init__).parameters[setting.name]
        assert setting.default == parameter.default, setting.name
        assert setting.help, setting.name
    names = [s.name for s in MODEL_SETTINGS]
    assert len(names) == len(set(names)), "a setting is owned twice"


def test_train_config_holds_every_setting_with_the_constructors_defaults():
    config = training.TrainConfig(model="Performer", dataset="mnist")
    for setting in MODEL_SETTINGS:
        assert getattr(config, setting.name) == setting.default
    assert {f.name for f in dataclasses.fields(config)} >= {s.name for s in MODEL_SETTINGS}
    assert config.model_hparams()["feature_map"] == "softmax"


def test_docstring_entries_join_continuation_lines_and_shared_entries():
    class Documented:
        """Text.

        Args:
            a: first line
                second line: with a colon.
            b, c: shared.

        Returns:
            d: not an argument.
        """

    assert settings.docstring_entries(Documented) == {
        "a": "first line second line: with a colon.",
        "b": "shared.",
        "c": "shared.",
    }


def test_undocumented_setting_is_refused():
    class Undocumented:
        def __init__(self, width=3):
            pass

    with pytest.raises(TypeError, match="no documented constructor argument 'width'"):
        settings.describe(Undocumented, ("width",))


def test_invalid_setting_names_the_flags():
    error = settings.InvalidSetting(
        "dim=10 is not divisible by heads=4; choose heads that divide dim.", ["dim", "heads"]
    )
    assert (
        settings.flag_message(error)
        == "flag --dim=10 is not divisible by --heads=4; choose heads that divide dim."
    )


def test_a_layer_argument_is_written_as_the_flag_it_comes_from():
    """Layers name their own arguments; the CLI writes each as its model flag."""
    with pytest.raises(
        ValueError, match=r"^flag --heads=3 is not allowed for ClippedRelativeAttention"
    ):
        training.resolve_config("ClippedRelativePerformer", "mnist", dim=6, heads=3)
    error = settings.InvalidSetting("num_heads=3 is not allowed.", ["num_heads"])
    assert settings.flag_message(error) == "flag --heads=3 is not allowed."


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_tuner_space_is_every_tunable_setting_of_the_model(model):
    hp = kt.HyperParameters()
    tuning.define_search_space(hp, model, channels=1)
    tunable = {s.name for s in MODEL_SETTINGS if s.search is not None and s.applies_to(model)}
    assert tunable <= {p.name for p in hp.space}
    assert (
        "clipping_dist" in tunable
        if model == "ClippedRelativePerformer"
        else "clipping_dist" not in tunable
    )


def test_ff_multiplier_reaches_cli_tuner_and_model():
    """The option added through its layer alone: TransformerBlock's `ff_multiplier`."""
    setting = next(s for s in MODEL_SETTINGS if s.name == "ff_multiplier")
    assert setting.owner is TransformerBlock and setting.default == 4
    config = training.resolve_config("Performer", "mnist", ff_multiplier=2, dim=8, heads=2, depth=1)
    model = training.build_compiled_model(config, training.make_strategy("default"))
    assert model.blocks[0]._ff_hidden.units == 16
    assert PerformerClassifier.from_config(model.get_config()).arguments()["ff_multiplier"] == 2
    with pytest.raises(
        ValueError, match=r"flag --ff_multiplier=0 is not allowed; use an integer >= 1"
    ):
        training.resolve_config("Performer", "mnist", ff_multiplier=0)


def test_feature_maps_are_one_table():
    from relperf_tf.layers.feature_maps import FEATURE_MAPS

    setting = next(s for s in MODEL_SETTINGS if s.name == "feature_map")
    assert setting.choices == tuple(FEATURE_MAPS) == ("softmax", "relu", "efficient", "exact")
