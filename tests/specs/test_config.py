import pytest

from recsys_matta.errors import UserError
from recsys_matta.specs import SpecError
from recsys_matta.specs.config import parse_overrides, resolve_config
from recsys_matta.specs.presets import PRESETS


def test_defaults_resolve_to_the_default_preset():
    cfg = resolve_config()
    assert cfg.model == PRESETS["default"]
    assert cfg.optim.dense == "shampoo"


def test_dotted_overrides_are_typed_yaml_values():
    cfg = resolve_config(overrides=["optim.lr=0.01", "model.blocks.1.width=[64, 256]", "loss.label=event"])
    assert cfg.optim.lr == 0.01
    assert cfg.model.blocks[1].width == (64, 256)  # one block of the preset edited
    assert cfg.model.blocks[0] == PRESETS["default"].blocks[0] and len(cfg.model.blocks) == 4
    assert cfg.loss.label == "event"
    assert parse_overrides(["a.b=[1,2]"]) == [("a.b", [1, 2])]


def test_preset_override_is_the_base_of_model_overrides():
    cfg = resolve_config(overrides=["model.d_model=[4,16]", "preset=small"])
    assert cfg.preset == "small" and cfg.model.d_model == (4, 16)
    assert cfg.model.blocks == PRESETS["small"].blocks


def test_yaml_file_then_overrides(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("preset: small\ntrain: {batch_size: 64}\noptim: {lr: 0.5}\n")
    cfg = resolve_config(p, ["optim.lr=0.25"])
    assert cfg.preset == "small" and cfg.model == PRESETS["small"]
    assert cfg.train.batch_size == 64 and cfg.optim.lr == 0.25


def test_the_batch_size_is_global_and_split_over_the_ranks():
    train = resolve_config(overrides=["train.batch_size=1024"]).train
    assert [train.per_rank_batch(n) for n in (1, 2, 8)] == [1024, 512, 128]
    with pytest.raises(UserError, match=r"train.batch_size=1024 is the global batch .* divisible by the world size 3 .* train.batch_size=1023"):
        train.per_rank_batch(3)


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("optim.lrr=1", "optim.lrr: unknown key"),
        ("train.batch_size=0", "train.batch_size: Input should be greater than or equal to 1"),
        ("optim.dense=sgd", "optim.dense: Input should be 'shampoo', 'adam' or 'adagrad'"),
        ("train.precision=fp16", "train.precision: Input should be 'float32' or 'bfloat16'"),
        ("preset=huge", "preset: unknown preset 'huge'"),
        ("model.d_model=[64,32]", "d_model [64, 32]: expected [narrow, wide]"),
        ("model.blocks.9.width=3", "model.blocks.9.width: '9' is not an index of a list of 4"),
        ("model.blocks.0.expansion=[200,100]", "gau expansion [200, 100]"),
        ("model.blocks=[{kind: dense, width: 8}, {kind: gau, expansion: 4, shared: 2}]", "token blocks must come before"),
        ("model.blocks.2.kind=conv", "model.blocks[2]: unknown kind 'conv'; expected 'gau', 'dense', 'residual'"),
        ("novalue", "expected key=value"),
    ],
)
def test_bad_config_names_the_key(override, fragment):
    with pytest.raises(SpecError) as e:
        resolve_config(overrides=[override])
    assert fragment in str(e.value)


def test_bad_config_file_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train: {batchsize: 3}\n")
    with pytest.raises(SpecError, match=r"bad.yaml.*\n.*train.batchsize: unknown key"):
        resolve_config(p)


def test_auto_threads_leave_the_reader_its_cores(monkeypatch):
    from recsys_matta.distributed.context import DistContext

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert DistContext().auto_threads() == 1
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert DistContext().auto_threads() == 14
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # 4 ranks on the node: 16 / 4 - 2
    assert DistContext(rank=1, world_size=8).auto_threads() == 2
