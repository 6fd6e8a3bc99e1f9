"""Feature specs: every shipped spec loads; bad specs fail with messages naming file and key;
the stable hash gives fixed buckets for fixed inputs."""

import copy
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from recsys_matta.data.hashing import hash_array, hash_to_buckets
from recsys_matta.specs import DenseFeature, SparseFeature, SpecError, load_spec

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "feature_specs").glob("**/*.yaml"))

GOOD = {
    "name": "tiny",
    "labels": {"teacher": "p", "event": "y"},
    "features": [
        {"name": "u", "group": "user", "kind": "sparse", "hash_buckets": 10},
        {
            "name": "x",
            "group": "item",
            "kind": "dense",
            "transform": "log1p",
            "normalize": True,
            "mean": 1.0,
            "std": 2.0,
        },
    ],
}


def _write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_spec_loads(path: Path) -> None:
    spec = load_spec(path)
    assert spec.sparse and spec.label_column
    assert len(set(spec.source_columns())) == len(spec.source_columns())


def test_the_three_datasets_are_shipped() -> None:
    names = {load_spec(p).name for p in SHIPPED}
    assert {"synthetic", "movielens", "criteo"} <= names


def test_good_spec_and_defaults(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, GOOD))
    assert spec.partition.column == "day" and spec.partition.format == "%Y-%m-%d"
    u, x = spec.features
    assert isinstance(u, SparseFeature) and u.num_embeddings == 10 and u.source == "u"
    assert isinstance(x, DenseFeature) and (x.mean, x.std, x.default) == (1.0, 2.0, 0.0)
    assert spec.source_columns() == ["u", "x", "p", "y"]
    assert spec.label_column == "p"


def _feature(i: int, **changes: object):
    def mutate(d: dict) -> None:
        d["features"][i].update(changes)

    return mutate


BAD = [
    ("unknown top key", lambda d: d.update(extra=1), "extra: unknown key"),
    ("unknown feature key", _feature(0, colour="red"), "features[0] (u).colour: unknown key"),
    ("no labels", lambda d: d.pop("labels"), "labels: required key is missing"),
    (
        "empty labels",
        lambda d: d.update(labels={}),
        "labels: give at least one of 'teacher' or 'event'",
    ),
    (
        "duplicate name",
        lambda d: d["features"].append(dict(d["features"][0])),
        "duplicate feature names: ['u']",
    ),
    (
        "both id spaces",
        _feature(0, vocab_size=5),
        "features[0] (u): give exactly one of 'hash_buckets' or 'vocab_size'",
    ),
    (
        "no id space",
        lambda d: d["features"][0].pop("hash_buckets"),
        "features[0] (u): give exactly one of 'hash_buckets' or 'vocab_size'",
    ),
    (
        "bad kind",
        _feature(0, kind="embedding"),
        "features[0] (u): unknown kind 'embedding'; expected 'sparse', 'dense'",
    ),
    (
        "missing kind",
        lambda d: d["features"][0].pop("kind"),
        "features[0] (u): required key 'kind' is missing",
    ),
    (
        "bad group",
        _feature(0, group="session"),
        "features[0] (u).group: Input should be 'user', 'context' or 'item'",
    ),
    (
        "zero buckets",
        _feature(0, hash_buckets=0),
        "features[0] (u).hash_buckets: Input should be greater than 0",
    ),
    (
        "text buckets",
        _feature(0, hash_buckets="many"),
        "features[0] (u).hash_buckets: Input should be a valid integer",
    ),
    ("clip order", _feature(1, clip=[3, 1]), "features[1] (x): clip low 3.0 is above high 1.0"),
    ("zero std", _feature(1, std=0), "features[1] (x).std: Input should be greater than 0"),
    (
        "bad transform",
        _feature(1, transform="sqrt"),
        "features[1] (x).transform: Input should be 'none', 'log1p' or 'signed_log1p'",
    ),
    ("label as feature", _feature(1, name="p"), "label columns used as features: ['p']"),
    (
        "partition clash",
        lambda d: d.update(partition={"column": "u"}),
        "partition column 'u' is also a feature or label",
    ),
    (
        "table size clash",
        lambda d: d["features"].append(
            {"name": "v", "group": "user", "kind": "sparse", "hash_buckets": 20, "table": "u"}
        ),
        "features 'u' and 'v' share table 'u' but need 10 and 20 rows",
    ),
    (
        "no sparse",
        lambda d: d.update(features=[d["features"][1]]),
        "at least one sparse feature is needed",
    ),
    ("no features", lambda d: d.update(features=[]), "features: List should have at least 1 item"),
]


@pytest.mark.parametrize("mutate,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_spec_names_file_key_and_problem(tmp_path: Path, mutate, message: str) -> None:
    data = copy.deepcopy(GOOD)
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert str(e.value).startswith(f"{path}: invalid FeatureSpec:\n")
    assert message in str(e.value)


def test_unreadable_spec_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope\.yaml: file not found"):
        load_spec(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken\.yaml: not valid YAML"):
        load_spec(p)
    p.write_text("- just\n- a list\n")
    with pytest.raises(
        SpecError, match=r"broken\.yaml: expected a mapping at the top level, got list"
    ):
        load_spec(p)


# --- stable hashing ---------------------------------------------------------------------------

INTS = [0, 1, 42, -1, 2**40]
STRS = ["", "a", "05db9164", "h\u00e9llo", "Quentin Tarantino"]
INT_HASHES = [0, 6238072747940578789, 12058926934050108962, 13029008266876403067, 48217637115032568]
STR_HASHES = [
    17665956581633026203,
    198367012849983736,
    14250529935039848023,
    1793390062926416830,
    9372281239621259482,
]
MASK = 2**64 - 1


def _splitmix64(z: int) -> int:
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & MASK
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def _fnv1a(s: str) -> int:
    h = 0xCBF29CE484222325
    for byte in s.encode():
        h = ((h ^ byte) * 0x100000001B3) & MASK
    return h


def test_hash_matches_fixed_values_and_reference() -> None:
    assert [int(h) for h in hash_array(pa.array(INTS, pa.int64()))] == INT_HASHES
    assert [int(h) for h in hash_array(pa.array(STRS))] == STR_HASHES
    assert INT_HASHES == [_splitmix64(v & MASK) for v in INTS]  # SplitMix64 finaliser
    assert STR_HASHES == [_splitmix64(_fnv1a(s)) for s in STRS]  # FNV-1a, then SplitMix64
    assert hash_to_buckets(pa.array(INTS), 1000).tolist() == [0, 789, 962, 67, 568]
    assert hash_to_buckets(pa.array(STRS), 1000).tolist() == [203, 736, 23, 830, 482]


def test_hash_is_independent_of_array_layout() -> None:
    strs = pa.array(STRS)
    expected = hash_to_buckets(strs, 1000).tolist()
    assert hash_to_buckets(pa.array(INTS[:4], pa.int32()), 1000).tolist() == [0, 789, 962, 67]
    assert hash_to_buckets(strs.slice(2), 1000).tolist() == expected[2:]
    assert hash_to_buckets(strs.cast(pa.large_string()).slice(1, 2), 1000).tolist() == expected[1:3]
    assert hash_to_buckets(strs.dictionary_encode(), 1000).tolist() == expected


def test_hash_is_stable_across_processes() -> None:
    code = (
        "import pyarrow as pa; from recsys_matta.data.hashing import hash_to_buckets; "
        "print(hash_to_buckets(pa.array(['05db9164', 'a']), 1000).tolist())"
    )
    for seed in ["0", "12345"]:
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            cwd=REPO,
        )
        assert out.stdout.strip() == "[23, 736]"
