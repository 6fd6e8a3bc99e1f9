"""Serving cost of an extracted Student: FLOPs per example, pyfunc latency."""

import pytest

from recsys_matta.models.cost import flops_per_example, serving_latency_ms
from recsys_matta.models.standalone import StandaloneModel
from recsys_matta.serving.pyfunc import StudentPyfunc
from recsys_matta.specs.model import DenseBlockConfig, TowerConfig
from tests.serving.tiny import SPEC, raw_rows, tiny_model


def _dense_only(widths: list[int], d: int = 4) -> StandaloneModel:
    cfg = TowerConfig(d_model=(d, d), blocks=[DenseBlockConfig(width=w) for w in widths])
    rows = {f.table_name: f.num_embeddings for f in SPEC.sparse}
    return StandaloneModel(SPEC.sparse_names, [f.table_name for f in SPEC.sparse], rows, "mean", len(SPEC.dense), cfg)


def test_flops_are_two_per_multiply_add_of_the_dense_layers():
    t = len(SPEC.sparse) + len(SPEC.dense)
    for widths in ([8, 4], [16, 8, 4]):
        ins = [4 * t, *widths]
        want = 2 * sum(a * b for a, b in zip(ins, [*widths, 1]))
        assert flops_per_example(_dense_only(widths)) == pytest.approx(want)
    assert flops_per_example(tiny_model()) > flops_per_example(_dense_only([8, 4]))  # + the GAU's matmuls


def test_latency_is_the_median_of_timed_pyfunc_calls():
    py = StudentPyfunc()
    py.spec, py.model = SPEC, tiny_model()
    calls = []
    predict = py.predict_df
    py.predict_df = lambda df: calls.append(len(df)) or predict(df)
    ms = serving_latency_ms(py, raw_rows(), repeats=3, warmup=1)
    assert ms > 0 and calls == [len(raw_rows())] * 4
