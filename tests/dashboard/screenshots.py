"""Write the dashboard screenshots used by docs/dashboard.md (run: python tests/dashboard/screenshots.py)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from dashboard_recorded import PINNED_CLOCK, history_frames, load_frames  # noqa: E402

from adc.dashboard.app import DashboardApp  # noqa: E402
from adc.dashboard.source import StaticSource  # noqa: E402

SHOTS = {"dashboard-overview.svg": ["down"], "dashboard-pools.svg": ["2"]}


async def shoot(name: str, keys: list[str], size: tuple[int, int] = (110, 28)) -> None:
    frames = history_frames()
    app = DashboardApp(StaticSource(frames), address="unix:/srv/adc/run/adc.sock", interval=None,
                       clock=lambda: PINNED_CLOCK)
    async with app.run_test(size=size) as pilot:
        await load_frames(app, len(frames))
        await pilot.pause()
        await pilot.press(*keys)
        await pilot.pause()
        (ROOT / "docs" / name).write_text(app.export_screenshot(title="adc dashboard"))


def main() -> None:
    os.environ["TZ"] = "UTC"
    time.tzset()
    for name, keys in SHOTS.items():
        asyncio.run(shoot(name, keys))
        print(f"docs/{name}")


if __name__ == "__main__":
    main()
