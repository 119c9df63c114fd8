"""The data sources on real DuckDB files, real Parquet files and the real PostgreSQL:
read-only, a statement timeout, a row cap, the live-schema check, errors without values."""

from __future__ import annotations

from pathlib import Path

import duckdb
import psycopg
import pytest

from custos.errors import ConfigurationError, SourceFailed, SourceUnavailable
from custos.sql import SourceMap, parse_data_map
from custos.sql.sources import check_schema, connect, run_query
from tests.sql.world import make_duckdb, make_parquet, pg_source, source_yaml


def _source(text: str, name: str = "app") -> SourceMap:
    return parse_data_map(text).source(name)


@pytest.fixture
def duck(tmp_path: Path) -> SourceMap:
    make_duckdb(tmp_path / "data" / "app.duckdb")
    return _source(source_yaml("app", "duckdb:data/app.duckdb", "logins"))


@pytest.fixture
def parquet(tmp_path: Path) -> SourceMap:
    make_parquet(tmp_path / "data" / "logins")
    return _source(source_yaml("lake", "duckdb:", "logins", file="data/logins/*.parquet"), "lake")


def test_a_duckdb_file_runs_with_a_row_cap(tmp_path: Path, duck: SourceMap) -> None:
    got = run_query(duck, tmp_path, "SELECT user_id, ip FROM logins", row_cap=5, timeout=5)
    assert got.columns == ("user_id", "ip")
    assert len(got.rows) == 5
    assert got.truncated
    every = run_query(duck, tmp_path, "SELECT count(*) FROM logins", row_cap=5, timeout=5)
    assert every.rows == [(69,)]
    assert not every.truncated


def test_a_duckdb_file_is_opened_read_only_without_external_access(
    tmp_path: Path, duck: SourceMap
) -> None:
    for sql in (
        "DELETE FROM logins",
        "CREATE TABLE stolen AS SELECT * FROM logins",
        "SELECT * FROM read_csv('/etc/passwd')",
        "COPY logins TO '/tmp/custos-stolen.csv'",
        "SET enable_external_access = true",
    ):
        with pytest.raises(SourceFailed) as caught:
            run_query(duck, tmp_path, sql, row_cap=10, timeout=5)
        assert "passwd" not in caught.value.message
    with duckdb.connect(str(tmp_path / "data" / "app.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM logins").fetchone() == (69,)


def test_parquet_files_are_views_and_nothing_else_is_readable(
    tmp_path: Path, parquet: SourceMap
) -> None:
    got = run_query(parquet, tmp_path, "SELECT count(*) FROM logins", row_cap=10, timeout=5)
    assert got.rows == [(69,)]
    (tmp_path / "secret.csv").write_text("a\n1\n")
    with pytest.raises(SourceFailed):
        run_query(parquet, tmp_path, f"SELECT * FROM '{tmp_path}/secret.csv'", row_cap=1, timeout=5)


def test_a_missing_source_is_unavailable(tmp_path: Path) -> None:
    source = _source(source_yaml("app", "duckdb:nowhere.duckdb", "logins"))
    with pytest.raises(SourceUnavailable, match="no DuckDB file"):
        run_query(source, tmp_path, "SELECT 1", row_cap=1, timeout=1)
    lake = _source(source_yaml("lake", "duckdb:", "logins", file="none/*.parquet"), "lake")
    with pytest.raises(SourceUnavailable, match="no Parquet file"):
        run_query(lake, tmp_path, "SELECT 1", row_cap=1, timeout=1)


def test_a_slow_duckdb_query_is_interrupted(tmp_path: Path, duck: SourceMap) -> None:
    slow = "SELECT count(*) FROM range(100000000000) a"
    with pytest.raises(SourceUnavailable, match=r"did not answer within 0\.2 s"):
        run_query(duck, tmp_path, slow, row_cap=1, timeout=0.2)


def test_the_live_schema_check_on_duckdb(tmp_path: Path, duck: SourceMap) -> None:
    assert check_schema(duck, tmp_path, timeout=5).ok
    with duckdb.connect(str(tmp_path / "data" / "app.duckdb")) as con:
        con.execute("ALTER TABLE logins ADD COLUMN phone VARCHAR")
        con.execute("ALTER TABLE logins DROP COLUMN city")
    check = check_schema(duck, tmp_path, timeout=5)
    assert check.problems == ("table logins: column city does not exist",)
    assert check.unmapped == {"logins": ("phone",)}
    wrong = _source(source_yaml("app", "duckdb:data/app.duckdb", "sessions"))
    assert check_schema(wrong, tmp_path, timeout=5).problems == ("table sessions does not exist",)


def test_the_live_schema_check_on_parquet(tmp_path: Path, parquet: SourceMap) -> None:
    check = check_schema(parquet, tmp_path, timeout=5)
    assert check.ok
    assert not check.unmapped
    assert not check.warnings


# -- PostgreSQL -------------------------------------------------------------------------


def test_postgres_runs_read_only_with_a_row_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_DB_PASSWORD", "reader-secret")
    with pg_source() as pg:
        text = source_yaml("app", pg.reader_url, pg.table, password_env="APP_DB_PASSWORD")
        source = _source(text)
        got = run_query(
            source, tmp_path, f"SELECT user_id, ip FROM {pg.table}", row_cap=4, timeout=5
        )
        assert len(got.rows) == 4
        assert got.truncated
        assert got.columns == ("user_id", "ip")
        with connect(source, tmp_path, timeout=5) as connection:
            # Even a role that may write cannot: every transaction is read-only.
            with pytest.raises(SourceFailed, match="SQLSTATE 25006"):
                connection.run(f"DELETE FROM {pg.table}", 1)
            assert connection.run(f"SELECT count(*) FROM {pg.table}", 1).rows == [(69,)]


def test_postgres_as_a_writer_is_still_read_only(tmp_path: Path) -> None:
    with pg_source() as pg:
        source = _source(source_yaml("app", pg.admin_url, pg.table))
        with pytest.raises(SourceFailed, match="SQLSTATE 25006"):
            run_query(source, tmp_path, f"UPDATE {pg.table} SET city = 'x'", row_cap=1, timeout=5)
        with psycopg.connect(pg.admin_url) as con:
            assert con.execute(f"SELECT count(*) FROM {pg.table} WHERE city = 'x'").fetchone() == (
                0,
            )


def test_postgres_errors_name_the_sqlstate_never_the_value(tmp_path: Path) -> None:
    with pg_source() as pg:
        source = _source(source_yaml("app", pg.reader_url, pg.table))
        bad = f"SELECT * FROM {pg.table} WHERE ip = CAST('secret-value-77' AS inet)"
        with pytest.raises(SourceFailed) as caught:
            run_query(source, tmp_path, bad, row_cap=1, timeout=5)
        assert "secret-value-77" not in str(caught.value.to_dict())
        assert "SQLSTATE 22P02" in caught.value.message


def test_a_slow_postgres_query_times_out(tmp_path: Path) -> None:
    with pg_source() as pg:
        source = _source(source_yaml("app", pg.reader_url, pg.table))
        with pytest.raises(SourceUnavailable, match=r"did not answer within 0\.2 s"):
            run_query(source, tmp_path, "SELECT pg_sleep(5)", row_cap=1, timeout=0.2)


def test_an_unreachable_postgres_is_unavailable_without_its_words(tmp_path: Path) -> None:
    source = _source(source_yaml("app", "postgresql://nobody@127.0.0.1:1/none", "logins"))
    with pytest.raises(SourceUnavailable, match="unreachable") as caught:
        run_query(source, tmp_path, "SELECT 1", row_cap=1, timeout=1)
    assert "nobody" not in caught.value.message


def test_an_unset_password_variable_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_PASSWORD", raising=False)
    source = _source(
        source_yaml(
            "app", "postgresql://r@127.0.0.1/test", "logins", password_env="NO_SUCH_PASSWORD"
        )
    )
    with pytest.raises(ConfigurationError, match=r"\$NO_SUCH_PASSWORD is not set"):
        run_query(source, tmp_path, "SELECT 1", row_cap=1, timeout=1)


def test_the_live_schema_check_on_postgres(tmp_path: Path) -> None:
    with pg_source() as pg:
        reader = check_schema(
            _source(source_yaml("app", pg.reader_url, pg.table)), tmp_path, timeout=5
        )
        assert reader.ok
        assert not reader.warnings
        assert reader.unmapped == {pg.table: ("note",)}
        admin = check_schema(
            _source(source_yaml("app", pg.admin_url, pg.table)), tmp_path, timeout=5
        )
        assert admin.warnings == (
            f"role postgres can write to {pg.table}: map the source with a read-only role",
        )
        with psycopg.connect(pg.admin_url, autocommit=True) as con:
            con.execute(f"ALTER TABLE {pg.table} RENAME COLUMN user_id TO account")
        broken = check_schema(
            _source(source_yaml("app", pg.reader_url, pg.table)), tmp_path, timeout=5
        )
        assert f"table {pg.table}: the subject column user_id does not exist" in broken.problems
    gone = check_schema(
        _source(source_yaml("app", "postgresql://x@127.0.0.1:1/none", "logins")),
        tmp_path,
        timeout=1,
    )
    assert not gone.ok
    assert "unreachable" in gone.problems[0]
