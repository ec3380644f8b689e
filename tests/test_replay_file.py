"""Reading recorded tick files: CSV and Parquet, ISO-8601 or epoch-µs times, optional columns."""

from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stockmax.replay import TickFileError, read_tick_file


def us(text):
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 1_000_000)


def test_csv_with_iso_times_and_defaults(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("symbol,price,event_time\nAAPL,1.5,2026-01-05T14:30:00.123456Z\nMSFT,2,2026-01-05T14:30:01\n")
    table = read_tick_file(path)
    assert table["event_time"].to_pylist() == [us("2026-01-05T14:30:00.123456"), us("2026-01-05T14:30:01")]
    assert table["seq"].to_pylist() == [0, 1]
    assert table["volume"].to_pylist() == [0.0, 0.0]
    assert table["exchange"].to_pylist() == ["", ""]
    assert table["price"].to_pylist() == [1.5, 2.0]


def test_csv_with_iso_offset(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("symbol,price,event_time\nAAPL,1.5,2026-01-05T16:30:00+02:00\n")
    assert read_tick_file(path)["event_time"].to_pylist() == [us("2026-01-05T14:30:00")]


def test_parquet_with_epoch_micros_and_all_columns(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"symbol": ["A"], "price": [3.0], "event_time": [1767623400000001],
                             "volume": [10.0], "exchange": ["XNAS"], "seq": [42]}), path)
    row = read_tick_file(path).to_pylist()[0]
    assert row == {"symbol": "A", "price": 3.0, "volume": 10.0, "exchange": "XNAS", "seq": 42,
                   "event_time": 1767623400000001}


@pytest.mark.parametrize("content, message", [
    ("symbol,price\nA,1\n", "missing column"),
    ("symbol,price,event_time\nA,1,yesterday\n", "event_time"),
    ("symbol,price,event_time\nA,,1\n", "empty value"),
])
def test_bad_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "t.csv"
    path.write_text(content)
    with pytest.raises(TickFileError, match=message):
        read_tick_file(path)


def test_unknown_extension(tmp_path):
    path = tmp_path / "t.xlsx"
    path.write_text("x")
    with pytest.raises(TickFileError, match="unknown file type"):
        read_tick_file(path)
