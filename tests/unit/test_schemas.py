import json

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from digitq.common.errors import InvalidRequest
from digitq.common.registry import parse_model_ref
from digitq.common.schemas import TrainRequest, TrainResult, check_job_id, check_model_name


def test_defaults_validate_and_round_trip():
    r = TrainRequest()
    r.check()
    assert TrainRequest.from_dict(json.loads(json.dumps(r.to_dict()))) == r


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"arch": "resnet"}, "unknown arch 'resnet'"),
        ({"epochs": 0}, "epochs must be between 1"),
        ({"epochs": -3}, "epochs must be between 1"),
        ({"learning_rate": 0}, "learning_rate must be > 0"),
        ({"learning_rate": -1e-3}, "learning_rate must be > 0"),
        ({"learning_rate": float("nan")}, "learning_rate must be a number"),
        ({"epochs": "3"}, "epochs must be a whole number"),
        ({"epochs": True}, "epochs must be a whole number"),
        ({"dropout": 1.5}, "dropout must be between"),
        ({"batch_size": 0}, "batch_size must be between"),
        ({"conv_channels": [32, "x"]}, "conv_channels[1] must be a whole number"),
        ({"conv_channels": []}, "conv_channels must be a list of 1 to 4"),
        ({"name": "../etc"}, "invalid model name"),
        ({"name": "a/b"}, "invalid model name"),
        ({"dataset": "bad\x00path"}, "control characters"),
        ({"surprise": 1}, "unknown field(s) in TrainRequest: surprise"),
        ({"epochs": None}, "epochs is required"),
    ],
)
def test_bad_fields_are_refused_with_a_reason(fields, message):
    with pytest.raises(InvalidRequest) as exc:
        TrainRequest.from_dict(fields)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("payload", [None, [], "x", 3, [{"epochs": 1}]])
def test_non_objects_are_refused(payload):
    with pytest.raises(InvalidRequest, match="must be a JSON object"):
        TrainRequest.from_dict(payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


@hsettings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(list(TrainRequest().to_dict()) + ["junk"]), json_values, max_size=6))
def test_any_json_message_is_either_a_valid_request_or_an_invalid_request_error(payload):
    try:
        r = TrainRequest.from_dict(payload)
    except InvalidRequest as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert 1 <= r.epochs <= 1000 and r.arch in ("cnn", "seed-cnn", "mlp")


@hsettings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_job_ids_and_model_names_never_carry_path_parts(text):
    for check in (check_job_id, check_model_name):
        try:
            value = check(text)
        except InvalidRequest:
            continue
        assert "/" not in value and ".." not in value and not any(ord(c) < 32 for c in value)


def test_a_trailing_newline_is_not_part_of_a_valid_name():
    # `$` matches before a final newline: hypothesis found "0\n" accepted as a job id and a name.
    for check in (check_job_id, check_model_name):
        with pytest.raises(InvalidRequest):
            check("0\n")


def test_model_refs():
    assert parse_model_ref("digits") == ("digits", None)
    assert parse_model_ref("digits:3") == ("digits", 3)
    for bad in ("digits:0", "digits:x", "../x:1", ":1"):
        with pytest.raises(InvalidRequest):
            parse_model_ref(bad)


def test_train_result_from_dict_ignores_unknown_keys():
    d = dict(job_id="j", state="SUCCESS", test_accuracy=0.99, test_loss=0.03, per_class_accuracy=[],
             confusion=[], epochs=2, wall_seconds=1.0, train_seconds=0.5, model="digits:1", arch="cnn",
             model_path="/x", extra="ignored")
    assert TrainResult.from_dict(d).model == "digits:1"
