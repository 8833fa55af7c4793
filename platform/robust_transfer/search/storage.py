"""Optuna storage URLs: sqlite (default), any SQLAlchemy RDB URL (PostgreSQL, MySQL), a journal file
(`journal:PATH`) or a Redis journal (`redis://host:port/db`) for parallel workers."""
from __future__ import annotations

import contextlib
import os
import re
import time
import warnings
from pathlib import Path

from ..errors import SearchError

DEFAULT_STORAGE = "sqlite:///optuna.db"
HELP = ("sqlite:///optuna.db, an RDB URL such as postgresql://user@host:5432/db, journal:PATH "
        "(a journal file), redis://host:6379/0 (a Redis journal) or tracking:NAME.db (a sqlite file beside the "
        "MLflow sqlite tracking store, or in $RTL_STUDY_DIR when the store is a server)")
TRACKING = "tracking:"   # `tracking:optuna.db`: a sqlite study file in the MLflow tracking store's folder
# A tracking server (http://, a database) has no folder of ours: `tracking:` studies then go to this folder, which
# the user names (`bin/cpu-scale-run` sets it beside the server's store). A suite YAML keeps one storage value for
# both kinds of store, so a step's parameters (and so its registration) do not depend on where the runs are kept.
STUDY_DIR_ENV = "RTL_STUDY_DIR"


def resolve(url: str) -> str:
    """`tracking:NAME.db` → `sqlite:///<folder of the MLflow sqlite tracking store>/NAME.db` (the study lives,
    and survives, with the runs that record it, wherever a suite step's process runs); any other URL unchanged."""
    url = str(url)
    if not url.startswith(TRACKING):
        return url
    name = url[len(TRACKING):]
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise SearchError(f"storage={url!r}: give a file name, e.g. tracking:optuna.db (it goes beside the "
                          "MLflow tracking store)")
    from ..tracking.runs import absolute_tracking_uri, tracking_uri

    uri = absolute_tracking_uri(tracking_uri())
    if not uri.startswith("sqlite:///"):
        folder = os.environ.get(STUDY_DIR_ENV, "")
        if folder:
            return f"sqlite:///{Path(folder).resolve() / name}"
        raise SearchError(f"storage={url!r} puts the study beside a sqlite MLflow tracking store, but the tracking "
                          f"URI is {redact(uri)!r}: set {STUDY_DIR_ENV} to a folder for the study, or give a "
                          f"storage URL: {HELP}")
    return f"sqlite:///{Path(_sqlite_file(uri)).parent / name}"


# A worker that dies mid-trial (SIGKILL, OOM, a lost machine) leaves its trial RUNNING. RDB storages (sqlite,
# PostgreSQL, ...) record a heartbeat per running trial; the next worker that starts a trial marks trials
# without a heartbeat for the grace period FAIL and re-queues each (up to max_retry times) with the same parameters
# (`retry_stale_trial`). Seconds, from the environment (tests shorten them).
def heartbeat_settings() -> tuple[int, int, int]:
    """(heartbeat interval, grace period, max retries) from RTL_HEARTBEAT_INTERVAL / RTL_HEARTBEAT_GRACE /
    RTL_TRIAL_MAX_RETRY (defaults 10 s, 60 s, 2); RTL_HEARTBEAT_INTERVAL=0 turns heartbeats off."""
    def get(name: str, default: int, low: int) -> int:
        raw = os.environ.get(name, "").strip()
        try:
            value = int(raw) if raw else default
        except ValueError:
            value = -1
        if value < low:
            raise SearchError(f"{name}={raw!r} is not a whole number >= {low}")
        return value

    interval = get("RTL_HEARTBEAT_INTERVAL", 10, 0)
    grace = get("RTL_HEARTBEAT_GRACE", max(60, 3 * interval), 1)
    if interval and grace <= interval:
        raise SearchError(f"RTL_HEARTBEAT_GRACE={grace} must be longer than RTL_HEARTBEAT_INTERVAL={interval}")
    return interval, grace, get("RTL_TRIAL_MAX_RETRY", 2, 0)


def retry_stale_trial(max_retry: int):
    """The heartbeat-stale callback: re-queue the dead worker's trial (Optuna's
    RetryHeartbeatStaleTrialCallback: system attrs `failed_trial`, `retry_history`) and end its MLflow child
    run FAILED instead of leaving it RUNNING forever (needs the shared tracking store every worker uses)."""
    import optuna

    with warnings.catch_warnings():  # experimental since Optuna 2.8, and the documented way
        warnings.simplefilter("ignore")
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def callback(study, trial) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            retry(study, trial)
        run_id = trial.user_attrs.get("mlflow_run_id")
        if not run_id:
            return
        try:
            from ..tracking import mlflow_client

            client = mlflow_client()
            client.set_tag(run_id, "rtl.trial_state", "FAIL")
            client.set_tag(run_id, "rtl.failure", "worker lost: no heartbeat within the grace period")
            # KILLED: another command's housekeeping (close_dead_runs) saw the process gone first; the trial is
            # FAIL, so its run says FAILED either way.
            if client.get_run(run_id).info.status in ("RUNNING", "KILLED"):
                client.set_terminated(run_id, "FAILED")
        except Exception:  # another tracking store, or it is unreachable: the Optuna side is what matters
            pass

    return callback


def redact(url: str) -> str:
    """The URL without its password (safe for MLflow params and messages)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", str(url))


def rdb_url(url: str) -> str:
    """`postgresql://...` with the driver that is installed: SQLAlchemy 2.1 defaults PostgreSQL URLs to
    psycopg 3, while this environment ships psycopg2 (`postgresql+psycopg2://`)."""
    import importlib.util

    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain) and importlib.util.find_spec("psycopg") is None \
                and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len(plain):]
    return url


def kind(url: str) -> str:
    url = str(url)
    if url.startswith(TRACKING):
        return "sqlite"
    if url.startswith("journal:"):
        return "journal"
    if url.startswith(("redis://", "rediss://", "unix://")):
        return "redis"
    if url.startswith("sqlite:"):
        return "sqlite"
    if "://" in url:
        return "rdb"
    raise SearchError(f"storage={url!r} is not a storage URL; give {HELP}")


OPTUNA_TABLES = {"studies", "version_info"}   # what every Optuna RDB schema has


def _sqlite_file(url: str) -> str:
    """The database file of a sqlite URL; SearchError for an in-memory one (the study would vanish)."""
    from sqlalchemy.engine import make_url

    try:
        db = make_url(url).database
    except Exception as e:
        raise SearchError(f"storage={url!r} is not a sqlite URL ({e}); give e.g. sqlite:///optuna.db") from None
    if not db or db == ":memory:" or db.startswith("file::memory:"):
        raise SearchError(f"storage={url!r} is an in-memory database: the study would vanish when the command "
                          "ends; give a file, e.g. sqlite:///optuna.db")
    return db


def check_storage_target(url: str, *, create: bool = True) -> None:
    """Before Optuna touches a file storage (issue 17 §1: a failed command changes nothing): an existing sqlite
    file must be empty or an Optuna database (never add Optuna's tables to, e.g., an MLflow store), a journal
    file must hold JSON lines, and with create=False (promote only reads a study) the file must exist."""
    url = resolve(url)
    k = kind(url)
    if k not in ("sqlite", "journal"):
        return
    path = Path(_sqlite_file(url) if k == "sqlite" else url[len("journal:"):])
    if not create and not path.is_file():
        raise SearchError(f"storage={url!r}: {str(path)!r} does not exist; give the storage the study was "
                          "created in")
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return
    if not path.is_file():
        raise SearchError(f"storage={url!r}: {str(path)!r} is not a file")
    if k == "journal":
        with open(path, "rb") as f:
            head = f.read(1)
        if head != b"{":
            raise SearchError(f"storage={url!r}: {str(path)!r} is not an Optuna journal (JSON lines); "
                              "nothing was changed: give a new file or an Optuna journal")
        return
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise SearchError(f"storage={url!r}: {str(path)!r} is not a sqlite database ({e}); nothing was changed") from None
    if tables and not OPTUNA_TABLES <= tables:
        shown = ", ".join(sorted(tables)[:4])
        raise SearchError(f"storage={url!r}: {str(path)!r} is another application's database (tables: {shown}, "
                          "...), not an Optuna storage; nothing was changed: give a new file, e.g. sqlite:///optuna.db")


def open_storage(url: str, *, heartbeat: bool = True, create: bool = True):
    """An Optuna storage object for `url`; SearchError (one line) when it cannot be reached. `heartbeat`: RDB
    storages record trial heartbeats (only `study.optimize` does; Ray's ask/tell must not: Optuna warns).
    `create=False`: only open an existing storage (never create a file or a directory)."""
    import optuna

    from ..extras import require_for_url

    url = resolve(url)
    k = kind(url)
    require_for_url(url, "storage")
    check_storage_target(url, create=create)
    try:
        if k == "journal":
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            path = Path(url[len("journal:"):])
            if not str(path) or str(path) == ".":
                raise SearchError(f"storage={url!r}: give a file, e.g. journal:optuna.log")
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        if k == "redis":
            from optuna.storages.journal import JournalRedisBackend, JournalStorage

            with warnings.catch_warnings():  # experimental in Optuna since 3.1, and the documented way
                warnings.simplefilter("ignore")
                backend = JournalRedisBackend(url)
            backend._redis.ping()  # fail now, not in trial 1
            return JournalStorage(backend)
        engine_kwargs = {}
        if url.startswith(("postgresql", "postgres")):
            engine_kwargs = {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}
        elif url.startswith("sqlite:"):
            Path(_sqlite_file(url)).parent.mkdir(parents=True, exist_ok=True)
            engine_kwargs = {"connect_args": {"timeout": 60}}
        interval, grace, max_retry = heartbeat_settings()
        beats = {}
        if interval and heartbeat:
            beats = {"heartbeat_interval": interval, "grace_period": grace,
                         "heartbeat_stale_trial_callback": retry_stale_trial(max_retry)}
        with warnings.catch_warnings():  # heartbeat_interval is an "experimental argument" in Optuna 5
            warnings.simplefilter("ignore")
            for attempt in range(3):
                try:
                    return optuna.storages.RDBStorage(rdb_url(url), engine_kwargs=engine_kwargs, **beats)
                except Exception as e:
                    # Workers opening a new PostgreSQL storage at once race to CREATE its tables; the losers get
                    # a unique violation on pg_type (seen in CI, 3 workers under load). The tables exist now: retry.
                    if attempt == 2 or "pg_type_typname_nsp_index" not in str(e):
                        raise
                    time.sleep(0.5 * (attempt + 1))
    except SearchError:
        raise
    except ModuleNotFoundError as e:
        raise SearchError(f"storage={redact(url)!r} needs the Python package {e.name!r}") from None
    except Exception as e:  # sqlalchemy OperationalError, redis ConnectionError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SearchError(f"storage={redact(url)!r} cannot be reached: {first[:300]}; give {HELP}") from None


@contextlib.contextmanager
def creation_lock(url: str):
    """Serialise study creation between processes on one machine (sqlite and journal files: never let
    several processes create one study at once). RDB servers and Redis handle it themselves."""
    url = resolve(url)
    k = kind(url)
    if k not in ("sqlite", "journal"):
        yield
        return
    from filelock import FileLock

    target = url.split(":///", 1)[-1] if k == "sqlite" else url[len("journal:"):]
    if not target or target == ":memory:":
        yield
        return
    with FileLock(str(creation_lock_path(target)), timeout=120):
        yield


def creation_lock_path(target: str) -> Path:
    """The lock file of one storage file: in the temporary directory, named by the hash of the file's absolute
    path, so every process on the machine finds the same one and the user's directory gets no
    `optuna.db.create.lock` (filelock leaves its file behind on purpose: deleting it would race)."""
    import hashlib
    import tempfile

    key = hashlib.sha256(str(Path(target).resolve()).encode()).hexdigest()[:24]
    return Path(tempfile.gettempdir()) / f"rtl-optuna-{key}.create.lock"
