"""MovieLens and Criteo adapters: shipped samples, hand-checked rows, layouts, bad input."""

from datetime import date
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from recsys_matta.cli import app, main
from recsys_matta.data.adapters import criteo, movielens
from recsys_matta.data.partitions import list_days
from recsys_matta.errors import DataError
from recsys_matta.specs import Partition, load_spec
from tests.shared_data import SHARED_DATA as DATA
from tests.shared_data import needs_shared_data

REPO = Path(__file__).resolve().parents[2]
ML = DATA / "ml-latest-small"
CRITEO = DATA / "criteo_sample" / "criteo_sample.txt"
DAY = Partition()


def _read(root: Path) -> pl.DataFrame:
    """All partitions in day order, with the partition value as column `day`."""
    return pl.concat(
        [
            pl.read_parquet(root / f"day={d}").with_columns(day=pl.lit(d))
            for d in list_days(root, DAY)
        ]
    )


def _no_output(root: Path) -> bool:
    return not root.exists() or list(root.iterdir()) == []


def _check_spec_columns(df: pl.DataFrame, spec_name: str) -> None:
    spec = load_spec(REPO / "feature_specs" / spec_name)
    assert set(spec.source_columns()) <= set(df.columns)


# --- MovieLens --------------------------------------------------------------------------------

MOVIES = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children
2,"American President, The (1995)",Comedy|Drama|Romance
3,Untitled,(no genres listed)
4,Series (2006\u20132007),Drama
"""
RATINGS = """userId,movieId,rating,timestamp
1,1,4.0,964982703
2,2,3.5,965001600
1,3,5.0,962409600
3,4,0.5,1136073600
3,1,4.5,1136160000
"""
TAGS = """userId,movieId,tag,timestamp
1,1,Pixar,964982800
2,1, pixar ,964982900
2,1,fun,964983000
3,2,politics,965002000
"""


def _ml_dir(tmp_path: Path, ratings: str = RATINGS, movies: str = MOVIES, tags: str = TAGS) -> Path:
    d = tmp_path / "ml"
    d.mkdir(exist_ok=True)
    for name, text in [("ratings.csv", ratings), ("movies.csv", movies), ("tags.csv", tags)]:
        if text is not None:
            (d / name).write_text(text)
    return d


@needs_shared_data
def test_movielens_shipped_sample(tmp_path: Path) -> None:
    written = movielens.convert(ML, tmp_path / "out", period="month")
    df = _read(tmp_path / "out")
    assert df.height == 100_836 and int(df["click"].sum()) == 48_580  # rating >= 4
    assert len(written) == 267 and written[0] == "1996-03-01" and written[-1] == "2018-09-01"
    assert df["timestamp"].is_sorted()
    _check_spec_columns(df, "movielens.yaml")
    rows = df.filter((pl.col("user_id") == 1) & pl.col("movie_id").is_in([1, 296])).sort("movie_id")
    toy, pulp = rows.to_dicts()
    # ratings.csv line 2: 1,1,4.0,964982703 = Sunday 2000-07-30 18:45:03 UTC
    assert (toy["day"], toy["hour"], toy["weekday"], toy["click"]) == ("2000-07-01", 18, 6, 1)
    assert toy["genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert toy["year"] == 1995 and toy["tags"] == ["fun", "pixar"]  # tags.csv: pixar x2, fun
    assert pulp["year"] == 1994 and pulp["click"] == 0 and "quentin tarantino" in pulp["tags"]


def test_movielens_hand_built_rows_and_periods(tmp_path: Path) -> None:
    src = _ml_dir(tmp_path)
    assert movielens.convert(src, tmp_path / "w", "week") == [
        "2000-06-26",
        "2000-07-24",
        "2000-07-31",
        "2005-12-26",
        "2006-01-02",
    ]
    assert movielens.convert(src, tmp_path / "m", "month") == ["2000-07-01", "2006-01-01"]
    assert movielens.convert(src, tmp_path / "d", "day") == [
        "2000-07-01",
        "2000-07-30",
        "2000-07-31",
        "2006-01-01",
        "2006-01-02",
    ]
    df = _read(tmp_path / "m")
    assert df["day"].to_list() == ["2000-07-01"] * 3 + ["2006-01-01"] * 2
    assert df["movie_id"].to_list() == [3, 1, 2, 4, 1]  # sorted by time
    assert df["click"].to_list() == [1, 1, 0, 0, 1]
    assert df["hour"].to_list() == [0, 18, 0, 0, 0]
    assert df["weekday"].to_list() == [5, 6, 0, 6, 0]  # Sat, Sun, Mon, Sun, Mon
    assert df["year"].to_list() == [None, 1995, 1995, 2006, 1995]
    assert df["genres"].to_list() == [
        [],
        ["Adventure", "Animation", "Children"],
        ["Comedy", "Drama", "Romance"],
        ["Drama"],
        ["Adventure", "Animation", "Children"],
    ]
    assert df["tags"].to_list() == [[], ["fun", "pixar"], ["politics"], [], ["fun", "pixar"]]
    assert (
        pq.read_schema(next((tmp_path / "m" / "day=2000-07-01").iterdir()))
        .field("click")
        .type.bit_width
        == 8
    )


def test_movielens_reconversion_replaces_the_dataset(tmp_path: Path) -> None:
    src = _ml_dir(tmp_path)
    movielens.convert(src, tmp_path / "out", "day")
    movielens.convert(src, tmp_path / "out", "month")
    assert list_days(tmp_path / "out", DAY) == ["2000-07-01", "2006-01-01"]


ML_BAD = [
    ("missing ratings", dict(ratings=None), r"ratings\.csv: input file not found"),
    ("empty ratings", dict(ratings=""), r"ratings\.csv: file is empty"),
    (
        "header only",
        dict(ratings="userId,movieId,rating,timestamp\n"),
        r"ratings\.csv: file has a header but no data rows",
    ),
    (
        "missing column",
        dict(ratings="userId,movieId,timestamp\n1,1,964982703\n"),
        r"ratings\.csv: missing column\(s\) 'rating'",
    ),
    (
        "mistyped rating",
        dict(ratings=RATINGS.replace("3.5", "good")),
        r"ratings\.csv: column 'rating': expected a number, got 'good' \(line 3\)",
    ),
    (
        "mistyped user",
        dict(ratings=RATINGS.replace("\n3,4", "\nx3,4")),
        r"ratings\.csv: column 'userId': expected an integer, got 'x3' \(line 5\)",
    ),
    (
        "bad timestamp",
        dict(ratings=RATINGS.replace("962409600", "2000-07-01 00:00")),
        r"ratings\.csv: column 'timestamp': expected an integer, got '2000-07-01 00:00' \(line 4\)",
    ),
    (
        "negative timestamp",
        dict(ratings=RATINGS.replace("962409600", "-5")),
        r"ratings\.csv: column 'timestamp': value -5 outside \[0, 1\.09951e\+12\] \(line 4\)",
    ),
    (
        "empty rating",
        dict(ratings=RATINGS.replace("4.5", "")),
        r"ratings\.csv: column 'rating': empty value \(line 6\)",
    ),
    (
        "rating out of range",
        dict(ratings=RATINGS.replace("0.5", "7")),
        r"ratings\.csv: column 'rating': value 7\.0 outside \[0, 5\] \(line 5\)",
    ),
    ("missing movies", dict(movies=None), r"movies\.csv: input file not found"),
    (
        "movies without genres",
        dict(movies="movieId,title\n1,Toy Story (1995)\n"),
        r"movies\.csv: missing column\(s\) 'genres'",
    ),
    (
        "duplicate movie",
        dict(movies=MOVIES + "2,Again (2000),Drama\n"),
        r"movies\.csv: column 'movieId': movie 2 appears more than once \(line 3\)",
    ),
    ("missing tags", dict(tags=None), r"tags\.csv: input file not found"),
    (
        "mistyped tag movie",
        dict(tags=TAGS.replace("3,2,politics", "3,two,politics")),
        r"tags\.csv: column 'movieId': expected an integer, got 'two' \(line 5\)",
    ),
]


@pytest.mark.parametrize("files,message", [b[1:] for b in ML_BAD], ids=[b[0] for b in ML_BAD])
def test_movielens_bad_input(tmp_path: Path, files: dict, message: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(DataError, match=message):
        movielens.convert(
            _ml_dir(tmp_path, **{**dict(ratings=RATINGS, movies=MOVIES, tags=TAGS), **files}),
            out,
            "week",
        )
    assert _no_output(out)


def test_movielens_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"--period 'year': expected one of day, week, month"):
        movielens.convert(_ml_dir(tmp_path), tmp_path / "out", "year")
    with pytest.raises(DataError, match=r"nope: input folder not found"):
        movielens.convert(tmp_path / "nope", tmp_path / "out", "week")


# --- Criteo -----------------------------------------------------------------------------------


@needs_shared_data
def test_criteo_shipped_sample(tmp_path: Path) -> None:
    written = criteo.convert(CRITEO, tmp_path / "out", days=3, start_date=date(2026, 3, 1))
    assert written == ["2026-03-01", "2026-03-02", "2026-03-03"]
    df = _read(tmp_path / "out")
    assert df.height == 200 and int(df["label"].sum()) == 49
    sizes = df.group_by("day", maintain_order=True).agg(n=pl.len(), pos=pl.col("label").sum())
    assert sizes["n"].to_list() == [66, 67, 67] and sizes["pos"].to_list() == [11, 18, 20]
    _check_spec_columns(df, "criteo.yaml")
    first, last = df.row(0, named=True), df.row(199, named=True)
    # line 2: 0,,3,260.0,,17668.0,,,33.0,,,,0.0,,05db9164,08d6d899,...,
    #         e5ba7672,87c6f83c,,,0429f84b,,3a171ecb,c0d61a5c,,
    assert (first["label"], first["I1"], first["I2"], first["I3"], first["I5"]) == (
        0,
        None,
        3.0,
        260.0,
        17668.0,
    )
    assert (first["I12"], first["I13"], first["C1"], first["C18"]) == (
        0.0,
        None,
        "05db9164",
        "87c6f83c",
    )
    assert (first["C19"], first["C21"], first["C24"], first["C26"]) == (
        None,
        "0429f84b",
        "c0d61a5c",
        None,
    )
    # line 201: 0,1.0,-1,,,138.0,0.0,1.0,0.0,0.0,1.0,1.0,,,be589b51,...
    assert (last["label"], last["I1"], last["I2"], last["I3"], last["I11"], last["I12"]) == (
        0,
        1.0,
        -1.0,
        None,
        1.0,
        None,
    )
    assert (last["C1"], last["C2"], last["C3"], last["C23"], last["C26"]) == (
        "be589b51",
        "b46aceb6",
        None,
        "32c7478e",
        None,
    )


@needs_shared_data
def test_criteo_public_tsv_layout_gives_the_same_rows(tmp_path: Path) -> None:
    lines = CRITEO.read_text().splitlines()[1:]
    tsv = tmp_path / "train.txt"
    tsv.write_text("\n".join(line.replace(",", "\t") for line in lines))  # no trailing newline
    assert criteo.detect_layout(tsv) == ("\t", False)
    assert criteo.detect_layout(CRITEO) == (",", True)
    criteo.convert(tsv, tmp_path / "tsv", days=2)
    criteo.convert(CRITEO, tmp_path / "csv", days=2)
    assert _read(tmp_path / "tsv").equals(_read(tmp_path / "csv"))
    assert list_days(tmp_path / "tsv", DAY) == ["2026-01-01", "2026-01-02"]


def _criteo_file(tmp_path: Path, edit) -> Path:
    lines = CRITEO.read_text().splitlines()
    edit(lines)
    p = tmp_path / "bad.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def _set_field(line_no: int, field: int, value: str):
    def edit(lines: list[str]) -> None:
        parts = lines[line_no - 1].split(",")
        parts[field] = value
        lines[line_no - 1] = ",".join(parts)

    return edit


CRITEO_BAD = [
    (
        "label 2",
        _set_field(201, 0, "2"),
        r"column 'label': value 2\.0 outside \[0, 1\] \(line 201\)",
    ),
    (
        "label -1",
        _set_field(3, 0, "-1"),
        r"column 'label': value -1\.0 outside \[0, 1\] \(line 3\)",
    ),
    ("label 0.5", _set_field(4, 0, "0.5"), r"column 'label': expected 0 or 1, got 0\.5 \(line 4\)"),
    ("empty label", _set_field(5, 0, ""), r"column 'label': empty value \(line 5\)"),
    (
        "mistyped dense",
        _set_field(150, 5, "many"),
        r"column 'I5': expected a number, got 'many' \(line 150\)",
    ),
    (
        "missing column",
        lambda lines: lines.__setitem__(0, lines[0].replace(",C26", ",C99")),
        r"missing column\(s\) C26 in the header",
    ),
    (
        "header only",
        lambda lines: lines.__delitem__(slice(1, None)),
        r"file has a header but no data rows",
    ),
    (
        "short row",
        lambda lines: lines.__setitem__(10, lines[10].rsplit(",", 1)[0]),
        r"cannot parse as Criteo data: .*Expected 40 columns, got 39",
    ),
]


@needs_shared_data
@pytest.mark.parametrize(
    "edit,message", [b[1:] for b in CRITEO_BAD], ids=[b[0] for b in CRITEO_BAD]
)
def test_criteo_bad_input(tmp_path: Path, edit, message: str) -> None:
    src = _criteo_file(tmp_path, edit)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=rf"{src}: {message}"):
        criteo.convert(src, out, days=3)
    assert _no_output(out)  # nothing half-written, even when earlier days were fine


@needs_shared_data
def test_criteo_bad_files_and_kept_output(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"{tmp_path / 'nope.txt'}: input file not found"):
        criteo.convert(tmp_path / "nope.txt", tmp_path / "out", days=1)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match=rf"{empty}: file is empty"):
        criteo.convert(empty, tmp_path / "out", days=1)
    short = tmp_path / "short.tsv"
    short.write_text("0\t1\t2\n")
    with pytest.raises(
        DataError, match=rf"{short}: line 1 has 3 tab-separated fields; expected 40"
    ):
        criteo.convert(short, tmp_path / "out", days=1)
    with pytest.raises(
        DataError, match=rf"--days 201: more days than the 200 data rows of {CRITEO}"
    ):
        criteo.convert(CRITEO, tmp_path / "out", days=201)
    with pytest.raises(DataError, match=r"--days 0: expected at least 1"):
        criteo.convert(CRITEO, tmp_path / "out", days=0)
    # a failed re-conversion keeps the earlier output untouched
    criteo.convert(CRITEO, tmp_path / "out", days=2)
    before = _read(tmp_path / "out")
    with pytest.raises(DataError):
        criteo.convert(_criteo_file(tmp_path, _set_field(201, 0, "3")), tmp_path / "out", days=4)
    assert _read(tmp_path / "out").equals(before)
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []


# --- CLI --------------------------------------------------------------------------------------


def test_cli_convert_movielens(tmp_path: Path) -> None:
    args = [
        "convert",
        "movielens",
        "--input",
        str(_ml_dir(tmp_path)),
        "--out",
        str(tmp_path / "o"),
        "--period",
        "month",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote 2 month partitions (2000-07-01..2006-01-01)" in result.output


@needs_shared_data
def test_cli_convert_criteo(tmp_path: Path) -> None:
    args = [
        "convert",
        "criteo",
        "--input",
        str(CRITEO),
        "--out",
        str(tmp_path / "o"),
        "--days",
        "4",
        "--start-date",
        "2026-02-27",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote 4 days (2026-02-27..2026-03-02)" in result.output
    assert [
        pq.read_table(tmp_path / "o" / f"day={d}").num_rows for d in list_days(tmp_path / "o", DAY)
    ] == [50] * 4


def test_cli_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as e:
        main(
            [
                "convert",
                "criteo",
                "--input",
                str(tmp_path / "missing.txt"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'missing.txt'}: input file not found\n"
