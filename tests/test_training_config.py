"""The training jobs' hyperparameters (mediasearch.training.config) as SageMaker carries them.

CreateTrainingJob's HyperParameters is a map of strings, each at most 2500 characters, at most 100
entries (botocore sagemaker service-2.json: HyperParameters, HyperParameterKey, HyperParameterValue).
The container reads them back from /opt/ml/input/config/hyperparameters.json, where the training
toolkit (sagemaker-training-toolkit environment.read_hyperparameters) json-decodes each value and keeps
the raw string when that fails; `from_hyperparameters` reads them the same way.
"""

from __future__ import annotations

import json

import botocore.session
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mediasearch.training.config import ClipTrainConfig, TrainConfig, VideoTrainConfig

SHAPES = botocore.session.get_session().get_service_model("sagemaker")
VALUE_MAX = SHAPES.shape_for("HyperParameterValue").metadata["max"]
KEY_MAX = SHAPES.shape_for("HyperParameterKey").metadata["max"]
ENTRIES_MAX = SHAPES.shape_for("HyperParameters").metadata["max"]


def toolkit_decode(values: dict[str, str]) -> dict[str, object]:
    """What sagemaker-training-toolkit's read_hyperparameters hands a script: JSON where it parses."""
    decoded: dict[str, object] = {}
    for key, value in values.items():
        try:
            decoded[key] = json.loads(value)
        except ValueError:
            decoded[key] = value
    return decoded


def check_wire(values: dict[str, str]) -> None:
    assert len(values) <= ENTRIES_MAX
    for key, value in values.items():
        assert isinstance(key, str) and isinstance(value, str), (key, value)
        assert len(key) <= KEY_MAX and len(value) <= VALUE_MAX, key


@pytest.mark.parametrize("model", [VideoTrainConfig, ClipTrainConfig])
def test_defaults_round_trip_as_strings(model: type[TrainConfig]) -> None:
    config = model()
    wire = config.to_hyperparameters()
    check_wire(wire)
    # Through the JSON file SageMaker writes, and back.
    assert model.from_hyperparameters(json.loads(json.dumps(wire))) == config
    # None is left out (the field's default stands), not sent as the string "null".
    assert "clip_model" not in wire and "base_model" not in wire
    assert wire["epochs"] == str(config.epochs) and wire["lr"] == json.dumps(config.lr)


def test_every_type_round_trips() -> None:
    config = ClipTrainConfig(
        epochs=3,
        batch_size=4,
        lr=2.5e-6,
        weight_decay=0.1,
        seed=-7,
        base_model="org/model",
        from_scratch=True,
    )
    wire = config.to_hyperparameters()
    assert wire["from_scratch"] == "true" and wire["base_model"] == "org/model" and wire["seed"] == "-7"
    back = ClipTrainConfig.from_hyperparameters(wire)
    assert back == config
    assert isinstance(back.lr, float) and isinstance(back.epochs, int) and back.from_scratch is True
    # The toolkit's decoding gives the same values typed; the models accept those too.
    assert ClipTrainConfig.from_hyperparameters(toolkit_decode(wire)) == config


@pytest.mark.parametrize("text", ["123", "true", "null", "1e5", "[1]", "{}", " 7 "])
def test_strings_that_read_as_json_stay_strings(text: str) -> None:
    """A model id of digits, or named "null", must come back the same string, not 123 or None."""
    config = VideoTrainConfig(clip_model=text, init_from=text)
    wire = config.to_hyperparameters()
    assert VideoTrainConfig.from_hyperparameters(wire) == config
    assert VideoTrainConfig.from_hyperparameters(toolkit_decode(wire)) == config


def test_a_plain_string_is_sent_readable() -> None:
    wire = VideoTrainConfig(clip_model="openai/clip-vit-base-patch32").to_hyperparameters()
    assert wire["clip_model"] == "openai/clip-vit-base-patch32"


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=200)


@settings(max_examples=150, deadline=None)
@given(
    epochs=st.integers(1, 10_000),
    batch_size=st.integers(2, 4096),
    lr=st.floats(min_value=1e-12, max_value=1.0, allow_nan=False),
    seed=st.integers(-(2**31), 2**31),
    frames=st.integers(1, 512),
    fps=st.floats(min_value=1e-3, max_value=120, allow_nan=False),
    extra_seconds=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    clip_model=st.none() | names,
)
def test_video_config_round_trips(
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    frames: int,
    fps: float,
    extra_seconds: float,
    clip_model: str | None,
) -> None:
    config = VideoTrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        frames=frames,
        fps=fps,
        segment_seconds=frames / fps + extra_seconds,  # the frames must fit in a segment
        clip_model=clip_model,
    )
    wire = config.to_hyperparameters()
    check_wire(wire)
    assert VideoTrainConfig.from_hyperparameters(json.loads(json.dumps(wire))) == config
    assert VideoTrainConfig.from_hyperparameters(toolkit_decode(wire)) == config


def test_long_values_are_the_launchers_to_refuse() -> None:
    """The config does not cap a model id's length; the launcher refuses what SageMaker would
    (mediasearch.aws.training.check_hyperparameters, tested in test_aws_training)."""
    wire = ClipTrainConfig(base_model="m" * (VALUE_MAX + 1)).to_hyperparameters()
    assert len(wire["base_model"]) == VALUE_MAX + 1


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"epochs": "0"}, "epochs"),
        ({"epochs": "ten"}, "epochs"),
        ({"batch_size": "1"}, "batch_size"),
        ({"lr": "2"}, "lr"),
        ({"from_scratch": "perhaps"}, "from_scratch"),
        ({"frame_rate": "1"}, "frame_rate"),  # not a field: extra keys are refused, not dropped
    ],
)
def test_bad_values_name_the_field(values: dict[str, str], field: str) -> None:
    model = ClipTrainConfig if "from_scratch" in values else VideoTrainConfig
    with pytest.raises(ValidationError) as caught:
        model.from_hyperparameters(values)
    assert [err["loc"][0] for err in caught.value.errors()] == [field]


def test_frozen() -> None:
    with pytest.raises(ValidationError):
        VideoTrainConfig().epochs = 3  # type: ignore[misc]
