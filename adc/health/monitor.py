"""Health monitor: probes every real server of every pool with a health check.

Each real server is probed on its own schedule, shortened by up to `JITTER` at random
so probes of many servers do not line up (the first probe is spread over one
interval). `RiseFall` (pure code) turns results into verdicts: a server goes down
after `fall` failures in a row and comes back after `rise` successes in a row.
Failed connects on live traffic (`PoolRuntime.on_connect_failure`) count as failures too.

The schedule follows the verdict, as HAProxy's inter/fastinter/downinter do
(`probe_interval`): `interval` while nothing is changing, `fast_interval` while a
verdict is changing (an up server has failed, a down one has answered), so a change
is confirmed or dismissed sooner, and `down_interval` while a server is down. A
failure seen on live traffic brings the next probe forward to `fast_interval`.

Every transition is logged and added to the EventLog with the reason of the last
check; every result is kept on the server (`last_check`).

Servers start presumed up, as in HAProxy; a reload (`replace_pools`) keeps the
verdict and counters of servers whose address and check did not change.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Awaitable, Callable, Mapping

from adc.config.model import HealthCheck
from adc.health.checks import run_check
from adc.pools.pool import CheckResult, PoolRuntime, RealServerRuntime
from adc.runtime.events import EventLog
from adc.runtime.loglimit import limited

log = logging.getLogger("adc.health")

JITTER = 0.15  # each interval is shortened by up to this fraction, at random

Probe = Callable[[HealthCheck, PoolRuntime, RealServerRuntime], Awaitable[CheckResult]]


class RiseFall:
    """Consecutive-result counting: down after `fall` failures, up after `rise` successes."""

    __slots__ = ("rise", "fall", "up", "successes", "failures")

    def __init__(self, rise: int, fall: int, up: bool = True):
        self.rise = max(1, rise)
        self.fall = max(1, fall)
        self.up = up
        self.successes = 0
        self.failures = 0

    def record(self, ok: bool) -> bool:
        """Count one result; True when the verdict changed."""
        if ok:
            self.successes += 1
            self.failures = 0
            if not self.up and self.successes >= self.rise:
                self.up = True
                self.successes = 0
                return True
        else:
            self.failures += 1
            self.successes = 0
            if self.up and self.failures >= self.fall:
                self.up = False
                self.failures = 0
                return True
        return False


def probe_interval(check: HealthCheck, state: RiseFall) -> float:
    """Seconds from one probe to the next, for the verdict and the counts in `state`."""
    if state.up:
        changing = state.failures > 0
        steady = check.interval
    else:
        changing = state.successes > 0
        steady = check.interval if check.down_interval is None else check.down_interval
    if changing and check.fast_interval is not None:
        return check.fast_interval
    return steady


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Watch:
    """One monitored real server."""

    __slots__ = ("pool", "rs", "check", "state", "task", "last_probe", "due", "wake")

    def __init__(self, pool: PoolRuntime, rs: RealServerRuntime, check: HealthCheck, up: bool):
        self.pool = pool
        self.rs = rs
        self.check = check
        self.state = RiseFall(check.rise, check.fall, up)
        self.task: asyncio.Task[None] | None = None
        self.last_probe = 0.0  # loop time the last probe started
        self.due = 0.0  # loop time of the next probe, while waiting for it
        self.wake: asyncio.Future[None] | None = None  # while waiting: settled to look at `due` again


class HealthMonitor:
    def __init__(
        self,
        pools: Mapping[str, PoolRuntime],
        events: EventLog,
        *,
        probe: Probe = run_check,
        rng: random.Random | None = None,
    ):
        self.pools: dict[str, PoolRuntime] = dict(pools)
        self.events = events
        self.probe = probe
        self.random = (rng or random.Random()).random
        self.watches: dict[tuple[str, str], _Watch] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Schedule the probes on the running loop. Servers start presumed up."""
        self._started = True
        for pool in self.pools.values():
            if pool.config.health is not None:
                pool.start_healthy()
        self._sync(self.pools)

    def replace_pools(self, pools: Mapping[str, PoolRuntime]) -> None:
        """After a reload: keep the state of unchanged servers, start/stop probes as needed."""
        old_pools = self.pools
        self.pools = dict(pools)
        for name, pool in old_pools.items():
            if self.pools.get(name) is not pool and pool.on_connect_failure == self._connect_failure:
                pool.on_connect_failure = None
        if self._started:
            self._sync(self.pools)

    async def stop(self) -> None:
        self._started = False
        tasks = [w.task for w in self.watches.values() if w.task is not None] + list(self._retired)
        for pool in self.pools.values():
            if pool.on_connect_failure == self._connect_failure:
                pool.on_connect_failure = None
        self.watches.clear()
        self._retired.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _retire(self, watch: _Watch) -> None:
        if watch.task is not None:
            watch.task.cancel()
            self._retired.add(watch.task)
            watch.task.add_done_callback(self._retired.discard)

    def _sync(self, pools: Mapping[str, PoolRuntime]) -> None:
        loop = asyncio.get_running_loop()
        wanted: dict[tuple[str, str], _Watch] = {}
        for pool in pools.values():
            check = pool.config.health
            if check is None:
                for rs in pool.servers.values():
                    old = self.watches.get((pool.name, rs.name))
                    if old is not None and not rs.healthy:
                        pool.set_health(rs.name, True, None, initial=True)  # nothing will bring it back
                continue
            pool.on_connect_failure = self._connect_failure
            for rs in pool.servers.values():
                key = (pool.name, rs.name)
                old = self.watches.get(key)
                if old is not None and old.check == check and old.rs.address == rs.address:
                    if old.rs is not rs:  # a new runtime object for the same server: carry the verdict
                        pool.set_health(rs.name, old.state.up, old.rs.last_check, initial=True)
                    old.pool, old.rs = pool, rs
                    wanted[key] = old
                    continue
                if old is not None:
                    self._retire(old)
                watch = _Watch(pool, rs, check, rs.healthy)
                watch.task = loop.create_task(self._run(watch), name=f"health {pool.name}/{rs.name}")
                wanted[key] = watch
        for key, old in self.watches.items():
            if key not in wanted:
                self._retire(old)
        self.watches = wanted

    # ------------------------------------------------------------------ probing

    async def _run(self, watch: _Watch) -> None:
        loop = asyncio.get_running_loop()
        await self._wait(watch, loop.time() + self.random() * watch.check.interval)
        while True:
            watch.last_probe = started = loop.time()
            result = await self.probe(watch.check, watch.pool, watch.rs)
            if result.local:
                # the appliance ran short, not the server: no count either way, said once a while
                limited(watch.pool.limits, "local", log).log(
                    "pool %s server %s (%s): health check not run: %s",
                    watch.pool.name, watch.rs.name, watch.rs.address, result.reason)
            else:
                self.record(watch, result)
            await self._wait(watch, started + probe_interval(watch.check, watch.state) * (1.0 - JITTER * self.random()))

    async def _wait(self, watch: _Watch, due: float) -> None:
        """Until `due`, or the earlier time `_bring_forward` sets meanwhile."""
        loop = asyncio.get_running_loop()
        watch.due = due
        while (delay := watch.due - loop.time()) > 0:
            wake = watch.wake = loop.create_future()
            timer = loop.call_later(delay, _settle, wake)
            try:
                await wake
            finally:
                timer.cancel()
        watch.due = 0.0
        watch.wake = None

    def _bring_forward(self, watch: _Watch) -> None:
        """The verdict started changing between probes: the next one comes at the interval that applies now."""
        wake = watch.wake
        if wake is None:
            return  # probing right now; the next wait is computed afterwards
        due = watch.last_probe + probe_interval(watch.check, watch.state)
        if due < watch.due:
            watch.due = due
            _settle(wake)

    def _connect_failure(self, rs: RealServerRuntime, result: CheckResult) -> None:
        watch = self.watches.get((rs.pool.name, rs.name))
        if watch is not None and watch.rs is rs:
            self.record(watch, result)
            self._bring_forward(watch)

    def record(self, watch: _Watch, result: CheckResult) -> None:
        """Count one result (probe or live traffic) and apply a transition if there is one."""
        changed = watch.state.record(result.ok)
        pool, rs = watch.pool, watch.rs
        up = watch.state.up
        if not pool.set_health(rs.name, up, result) or not changed:
            return
        check = watch.check
        if up:
            message = (
                f"pool {pool.name} server {rs.name} ({rs.address}) is UP after {check.rise} "
                f"successful check(s): {result.reason}"
            )
            log.info("%s", message)
            self.events.add("health", message, "info", pool=pool.name, server=rs.name, up=True, reason=result.reason)
        else:
            message = (
                f"pool {pool.name} server {rs.name} ({rs.address}) is DOWN after {check.fall} "
                f"failed check(s): {result.reason}"
            )
            log.warning("%s", message)
            self.events.add(
                "health", message, "warning", pool=pool.name, server=rs.name, up=False, reason=result.reason
            )

    def view(self) -> dict[str, dict[str, object]]:
        """Per monitored server: verdict and the running counts (for the admin API)."""
        return {
            f"{p}/{s}": {
                "up": w.state.up,
                "successes": w.state.successes,
                "failures": w.state.failures,
                "interval": probe_interval(w.check, w.state),
                "last_check": w.rs.last_check.view() if w.rs.last_check else None,
            }
            for (p, s), w in self.watches.items()
        }
