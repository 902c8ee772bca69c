"""The TUI's half-block pictures of a run, captured at 100x30 as the terminal shows them (SVG).

    python bench/capture_tui_pictures.py --runs-dir RUNS --run NAME --out docs/img

Opens simclr-tui on RUNS (no worker), the run's detail, and its Views and Neighbours tabs
(each drawn by the real `simclr views` / `simclr neighbours` in the app's worker), waits for
each picture and saves the screen with Textual's own screenshot: `tui-views.svg`,
`tui-neighbours.svg`. Half blocks (SIMCLR_TUI_IMAGES=halfcell): what every terminal, tmux
and SSH included, can show.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path


async def capture(runs_dir: Path, run: str, out: Path, timeout: float) -> None:
    from simclr_tui.app import make_app
    from simclr_tui.widgets.picture import Picture

    app = make_app(runs_dir, start_worker=False)
    async with app.run_test(size=(100, 30)) as pilot:
        end = time.monotonic() + 30
        while run not in app.runs and time.monotonic() < end:
            await pilot.pause(0.2)
        app.open_run(run)
        await pilot.pause(1.0)
        for key, name in (("5", "views"), ("6", "neighbours")):
            await pilot.press(key)
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                pictures = [p for p in app.screen.query(Picture) if p.display and p.region.height]
                if pictures and all(not p.busy and p.shown is not None for p in pictures):
                    break
                await pilot.pause(0.5)
            await pilot.pause(1.0)
            path = out / f"tui-{name}.svg"
            app.save_screenshot(filename=path.name, path=str(out))
            print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs-dir", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--out", default="docs/img")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for each picture")
    args = p.parse_args()
    os.environ.setdefault("SIMCLR_TUI_IMAGES", "halfcell")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(capture(Path(args.runs_dir), args.run, out, args.timeout))


if __name__ == "__main__":
    main()
