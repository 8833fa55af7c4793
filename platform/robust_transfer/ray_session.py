"""A Ray cluster for the length of a block: an existing one (`address`: auto, ray://host:port, host:port) or a
local one started here with `num_cpus`; used by `search backend=ray` and `suite --workers N`.

Ray turns token authentication on by default for a local cluster and leaves RAY_AUTH_MODE=token in the process
environment afterwards: the environment is restored on shutdown. `env` reaches every worker (runtime_env)."""
from __future__ import annotations

import contextlib
import os

from .errors import SearchError


@contextlib.contextmanager
def ray_cluster(address: str, num_cpus: int, env: dict[str, str], *, error=SearchError, log_to_driver: bool = False):
    """Connect to `address`, or start a local cluster; `error` (a UserError class) if neither works."""
    import ray

    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE",)}
    started = False
    try:
        if not ray.is_initialized():
            kwargs = dict(runtime_env={"env_vars": env}, log_to_driver=log_to_driver, configure_logging=True,
                          logging_level="ERROR")
            try:
                if address:
                    ray.init(address=address, **kwargs)
                else:
                    ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
            except Exception as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                where = f"the Ray cluster at {address!r}" if address else "a local Ray cluster"
                raise error(f"could not start/connect {where}: {first[:300]}") from None
            started = True
        yield ray
    finally:
        if started:
            ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
