"""The servable Student without a store: request conversion, parity with the torch module."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from recsys_matta.models.standalone import FORMAT as STANDALONE_FORMAT
from recsys_matta.errors import DataError
from recsys_matta.serving.pyfunc import (
    StudentPyfunc,
    _save_weights,
    input_schema,
    load_weights,
    request_table,
    spec_yaml,
)
from recsys_matta.safeload import UnsafeFileError
from recsys_matta.specs import load_spec
from tests.planted import plant
from tests.serving.tiny import (
    COLUMNS,
    SPEC,
    PlainModel,
    raw_rows,
    raw_table,
    reference_probs,
    tiny_model,
)

# dense after encoding: price log1p -> (x - 1) / 2 with null/-2 -> log1p(max(x,0)); position
# default 1.0 for the null
_PRICE = (np.log1p(np.maximum([1.0, 0.0, 3.5, -2.0, 0.0, 100.0], 0)) - 1.0) / 2.0
_POSITION = np.array([1, 2, 3, 1, 5, 6], dtype=np.float64)
SPEC_DENSE_SUM = (_PRICE.astype(np.float32) + _POSITION.astype(np.float32)).astype(np.float64)


def _pyfunc(tmp_path, model) -> StudentPyfunc:
    (tmp_path / "spec.yaml").write_text(spec_yaml(SPEC))
    _save_weights(model, tmp_path / "student")
    return StudentPyfunc(batch_size=4).load(tmp_path / "spec.yaml", tmp_path / "student")


def test_request_table_types_and_values():
    table = request_table(SPEC, raw_rows())
    assert table.column_names == COLUMNS  # spec order, extra columns dropped
    assert table.equals(raw_table().cast(table.schema))
    assert table.schema.field("user_id").type == pa.int64()  # float64-with-NaN ids back to ints
    assert table.schema.field("tags").type == pa.list_(pa.int64())


def test_request_table_float_list_ids_and_errors():
    df = raw_rows().assign(tags=[[0.0, 1.0], [], None, [5.0], [2.0], [3.0]])
    assert request_table(SPEC, df).column("tags").to_pylist() == [[0, 1], [], None, [5], [2], [3]]
    with pytest.raises(DataError, match="'user_age' holds non-integer"):
        request_table(SPEC, raw_rows().assign(user_age=[0.5, 1, 2, 3, 0, 1]))
    with pytest.raises(DataError, match="'item_key' cannot be read"):
        request_table(SPEC, raw_rows().assign(item_key=["a", 1, "b", "c", "d", "e"]))


def test_spec_yaml_round_trip(tmp_path):
    (tmp_path / "spec.yaml").write_text(spec_yaml(SPEC))
    assert load_spec(tmp_path / "spec.yaml") == SPEC


def test_predict_equals_torch_module(tmp_path):
    model = tiny_model()
    expected = reference_probs(model, raw_table())
    assert expected.std() > 0.01  # the rows really differ
    got = _pyfunc(tmp_path, model).predict(None, raw_rows())
    assert got.dtype == np.float64 and got.shape == (6,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # row order is kept across the forward chunks (batch_size=4)
    np.testing.assert_allclose(
        _pyfunc(tmp_path, model).predict(None, raw_rows().iloc[::-1]), expected[::-1], atol=1e-6
    )


def test_unseen_ids_and_nulls_change_nothing_else(tmp_path):
    """Row 3 (unseen hashed ids, OOV ids, null age) scores as the same row with those ids
    replaced by their buckets' equivalents: the OOV row for user_age 7 == any other OOV id."""
    pyfunc = _pyfunc(tmp_path, tiny_model())
    rows = raw_rows()
    alt = rows.copy()
    alt["user_age"] = [0, 3, 99, None, 1, 2]  # 7 -> 99: both outside [0, 4) -> the OOV row
    alt["tags"] = [[0, 1], [], None, [5, 123], [2, None], [3]]
    np.testing.assert_allclose(pyfunc.predict(None, rows), pyfunc.predict(None, alt), atol=0)


def test_empty_and_missing_columns(tmp_path):
    pyfunc = _pyfunc(tmp_path, tiny_model())
    assert pyfunc.predict(None, raw_rows().iloc[:0]).shape == (0,)
    with pytest.raises(DataError, match="'item_key'"):
        pyfunc.predict(None, raw_rows().drop(columns=["item_key"]))


def test_weights_round_trip_plain_tensors_and_json(tmp_path):
    model = tiny_model(seed=3)
    assert _save_weights(model, tmp_path / "a") == STANDALONE_FORMAT
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["format"] == STANDALONE_FORMAT and config["feature_names"] == model.feature_names
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "a" / "state_dict.pt") == []
    loaded = load_weights(tmp_path / "a")
    table = raw_table()
    np.testing.assert_array_equal(reference_probs(loaded, table), reference_probs(model, table))
    # the /2 single-file format (the same plain values in one dict) still loads
    torch.save(model.to_dict() | {"format": "recsys_matta.standalone/2"}, tmp_path / "v2.pt")
    np.testing.assert_array_equal(reference_probs(load_weights(tmp_path / "v2.pt"), table), reference_probs(model, table))
    # any other module would need pickling: not logged
    with pytest.raises(TypeError, match="cannot log a PlainModel"):
        _save_weights(PlainModel(), tmp_path / "b")


def test_dense_encoding_reaches_the_model():
    """A plain module in the pyfunc (in memory): logit = the sum of the encoded dense values."""
    pyfunc = StudentPyfunc(batch_size=4)
    pyfunc.spec, pyfunc.model = SPEC, PlainModel()
    np.testing.assert_allclose(pyfunc.predict(None, raw_rows()), 1 / (1 + np.exp(-SPEC_DENSE_SUM)), atol=1e-6)


@pytest.mark.parametrize("where", ["state_dict.pt", "single-file"])
def test_planted_pickle_weights_are_refused_and_never_run(tmp_path, where):
    marker = tmp_path / "marker"
    _save_weights(tiny_model(), tmp_path / "m")
    bad = tmp_path / "m" / "state_dict.pt" if where == "state_dict.pt" else tmp_path / "m.pt"
    plant(bad, marker, wrap=False)
    target = tmp_path / "m" if where == "state_dict.pt" else bad
    with pytest.raises(UnsafeFileError, match=rf"{bad}: refused to load model weights.*would run code"):
        load_weights(target)
    (tmp_path / "spec.yaml").write_text(spec_yaml(SPEC))
    with pytest.raises(UnsafeFileError, match=str(bad)):
        StudentPyfunc().load(tmp_path / "spec.yaml", target)
    assert not marker.exists()


def test_old_pickled_module_artifact_says_re_register(tmp_path):
    torch.save(tiny_model(), tmp_path / "student.pt")  # what older versions could write
    with pytest.raises(UnsafeFileError, match=r"student\.pt: refused.*re-register the model"):
        load_weights(tmp_path / "student.pt")
    torch.save({"format": "recsys_matta.standalone/1"}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"old\.pt: format 'recsys_matta.standalone/1'.*re-register"):
        load_weights(tmp_path / "old.pt")


def test_input_schema_columns():
    schema = input_schema(SPEC)
    assert [c.name for c in schema.inputs] == COLUMNS
    from mlflow.types.schema import AnyType, DataType

    assert [isinstance(c.type, AnyType) for c in schema.inputs] == [True] * 4 + [False] * 2
    assert [c.type for c in schema.inputs[4:]] == [DataType.double, DataType.double]
    assert all(c.required for c in schema.inputs)


def test_spec_columns_equal_request_columns():
    assert list(dict.fromkeys(f.source for f in SPEC.features)) == COLUMNS
    assert isinstance(raw_rows(), pd.DataFrame)
