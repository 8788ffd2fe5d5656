import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from digitq.common.errors import InvalidRequest, InvalidResult
from digitq.common.registry import parse_model_ref
from digitq.common.schemas import (
    ARCH_DEFAULTS, ARCHITECTURES, EvaluateRequest, EvaluateResult, ListRequest, ListResult, PredictRequest,
    PredictResult, PredictSummary, ReportRequest, ReportResult, TrainRequest, TrainResult, check_job_id,
    check_model_name, default_text,
)


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


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a loaded machine
@given(st.dictionaries(st.sampled_from(list(TrainRequest().to_dict()) + ["junk"]), json_values, max_size=6))
def test_any_json_message_is_either_a_valid_request_or_an_invalid_request_error(payload):
    try:
        r = TrainRequest.from_dict(payload)
    except InvalidRequest as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert 1 <= r.epochs <= 1000 and r.arch in ARCHITECTURES


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a loaded machine
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


# --- the other messages and the results --------------------------------------------------------

REQUESTS = (TrainRequest, PredictRequest, EvaluateRequest, ListRequest, ReportRequest)


@pytest.mark.parametrize("cls, fields, message", [
    (EvaluateRequest, {"model": "a/b"}, "invalid model name"),
    (EvaluateRequest, {"test_size": 0}, "test_size must be between"),
    (EvaluateRequest, {"dataset": 3}, "dataset must be a string"),
    (ListRequest, {}, "folder is required"),
    (ListRequest, {"folder": "x", "recursive": "yes"}, "recursive must be true or false"),
    (ListRequest, {"folder": "x", "depth": 2}, "unknown field(s) in ListRequest: depth"),
    (ReportRequest, {}, "target is required"),
    (ReportRequest, {"target": "../etc"}, "invalid report target"),
    (ReportRequest, {"target": "digits:0"}, "invalid model version"),
    (ReportRequest, {"target": "j", "extra": 1}, "unknown field(s) in ReportRequest: extra"),
])
def test_other_requests_are_as_strict_as_the_train_request(cls, fields, message):
    with pytest.raises(InvalidRequest) as exc:
        cls.from_dict(fields)
    assert message in str(exc.value) and "\n" not in str(exc.value)


@hsettings(max_examples=100, deadline=None)
@given(st.sampled_from(REQUESTS[2:]), st.dictionaries(st.sampled_from(["model", "dataset", "test_size", "folder",
                                                                        "recursive", "target", "junk"]),
                                                       json_values, max_size=4))
def test_any_json_is_a_valid_request_or_one_line(cls, payload):
    try:
        cls.from_dict(payload)
    except InvalidRequest as exc:
        assert str(exc) and "\n" not in str(exc)


def test_results_round_trip_and_ignore_fields_a_newer_worker_adds():
    chunk = PredictResult(model="digits:1", probs=[[0.1] * 10, None], errors=[None, "not an image"])
    assert PredictResult.from_dict({**chunk.to_dict(), "new": 1}) == chunk
    ev = EvaluateResult(model="digits:1", dataset="mnist-test", images=3, accuracy=1.0, loss=0.1,
                        per_class_accuracy=[1.0] * 3 + [None] * 7, confusion=[[0] * 10] * 10)
    assert EvaluateResult.from_dict(json.loads(json.dumps(ev.to_dict()))) == ev
    assert ListResult.from_dict({"folder": "/d", "files": []}).files == []
    rep = ReportResult.from_dict({"job_id": "j", "model": None, "folder": "/f", "files": {"a.png": "AA=="}})
    assert rep.files == {"a.png": "AA=="}
    summary = PredictSummary(job_id="j", classified=1, failed=0, output="-", seconds=1.0, images_per_second=1.0)
    assert "gallery" not in summary.to_dict() and PredictSummary.from_dict(summary.to_dict()) == summary


def test_packed_probabilities_read_back_as_the_rounded_rows_of_a_list_answer():
    """A worker's packed answer (float32 rows of the images without an error) reads back as the
    same rows, to the same floats, as the JSON lists an older worker sends."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (300, 10)).astype(np.float32)
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    errors = [None] * 300
    errors[5] = errors[299] = "not an image"
    kept = np.delete(probs, [5, 299], axis=0)
    packed = PredictResult.from_dict(json.loads(json.dumps(PredictResult.packing("digits:1", kept, errors).to_dict())))
    rows = iter(np.round(kept.astype(np.float64), 6).tolist())
    listed = PredictResult(model="digits:1", probs=[next(rows) if e is None else None for e in errors], errors=errors)
    assert packed.probs == [] and packed.rows() == listed.rows()
    assert packed.rows()[5] is None and len(packed.rows()) == 300


@pytest.mark.parametrize("cls, data, message", [
    (PredictResult, {"model": "m", "probs": [[0.1] * 9], "errors": [None]}, "10 numbers or null"),
    (PredictResult, {"model": "m", "probs": [None], "errors": []}, "probs has 1 rows but errors 0"),
    (PredictResult, {"model": "m", "probs": [None], "errors": [3]}, "an error must be a string or null"),
    (PredictResult, {"model": "m", "probs": [], "errors": [None, None], "packed_probs": "AAAA"}, "base64 of 2 x 40 bytes"),
    (PredictResult, {"model": "m", "probs": [None], "errors": ["x"], "packed_probs": ""}, "and probs empty"),
    (EvaluateResult, {"model": "m", "dataset": "d", "images": 1, "accuracy": "high", "loss": 0.1,
                      "per_class_accuracy": [None] * 10, "confusion": [[0] * 10] * 10}, "accuracy must be a number"),
    (ListResult, {"folder": "/d"}, "files is required"),
    (ReportResult, {"job_id": "j", "folder": "/f", "files": []}, "files must be a JSON object"),
    (TrainResult, [], "must be a JSON object"),
])
def test_a_malformed_result_is_one_line_naming_the_worker(cls, data, message):
    with pytest.raises(InvalidResult) as exc:
        cls.from_dict(data)
    assert str(exc.value).startswith(f"a worker returned an unexpected {cls.__name__}: ") and message in str(exc.value)
    assert exc.value.exit_code == 1


def test_a_train_result_may_carry_nan_scores():
    d = dict(job_id="j", state="SUCCESS", test_accuracy=float("nan"), test_loss=float("nan"), per_class_accuracy=[],
             confusion=[], epochs=1, wall_seconds=1.0, train_seconds=0.5, model="digits:1", arch="cnn", model_path="/x")
    assert TrainResult.from_dict(d).epochs == 1


def test_every_architecture_has_every_default_and_the_texts_say_them():
    assert set(ARCH_DEFAULTS) == set(ARCHITECTURES)
    keys = {k for d in ARCH_DEFAULTS.values() for k in d}
    assert all(set(d) == keys for d in ARCH_DEFAULTS.values())
    assert default_text("label_smoothing") == "the architecture's (fast-cnn 0.1, cnn 0.1, seed-cnn 0, mlp 0)"
    assert default_text("epochs") == "5" and default_text("standardize") == "on" and default_text("jit") == "off"
    assert default_text("train_size") == "all"
