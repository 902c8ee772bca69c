"""The New-run form's memory line: the estimate at the form's batch, a warning that names a
micro-batch that fits, and a launch held until a second press. The model's cost and the free
memory are given (never this machine's), so the numbers do not depend on where tests run."""

from __future__ import annotations

import pytest
from textual.widgets import Input, Select
from tui_helpers import FAKE_RUNNER, wait_for, wait_screen, wait_text

from core.config import PretrainConfig, preset
from core.training.memory import ShapeCost, fitting_micro_batch, step_memory
from simclr_tui import memory
from simclr_tui.app import make_app
from simclr_tui.screens.detail import RunDetailScreen
from simclr_tui.screens.new_run import NewRunScreen
from simclr_tui.widgets.config_field import ConfigField
from simclr_tui.widgets.memory_line import MemoryLine

pytestmark = pytest.mark.asyncio
SIZE = (120, 40)
#: 1 MB saved per view, a 4 MB model: batch 256 (512 views) needs about 0.5 GB
COST = ShapeCost(params=1_000_000, encoder_params=900_000, buffer_bytes=10_000, per_view=1_000_000, fixed=0,
                 loss_quad=5.0, loss_lin=1000.0, loss_fixed=0.0, measured_on="meta")
FREE = 200_000_000


@pytest.fixture
def given(monkeypatch):
    """The cost and the free memory the form sees; the shapes and devices it asked about."""
    asked = {"shapes": [], "devices": []}

    def shape_cost(shape, job):
        asked["shapes"].append(shape)
        return COST

    def available_memory(device):
        asked["devices"].append(device)
        return FREE, "cpu"

    monkeypatch.setattr(memory, "shape_cost", shape_cost)
    monkeypatch.setattr(memory, "available_memory", available_memory)
    monkeypatch.setenv("SIMCLR_KEEP_FREED_MEMORY", "0")  # the heap's share is core's test
    return asked


def big_config(**kw) -> PretrainConfig:
    return PretrainConfig.from_dict(preset("tiny")).replace(batch_size=256, **kw)


async def open_form(pilot, name: str, batch: str) -> NewRunScreen:
    await pilot.press("n")
    form = await wait_screen(pilot, NewRunScreen, "#memory-line")
    form.query_one("#preset", Select).value = "tiny"
    await pilot.pause()
    form.query_one("#run-name", Input).value = name
    form.query_one("#cf-batch_size", ConfigField).control.value = batch
    return form


def notices(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_a_step_that_will_not_fit_is_launched_only_on_a_second_press(runs_dir, fast_runs, given):
    micro = fitting_micro_batch(big_config(), FREE, cost=COST)
    assert micro is not None and step_memory(big_config(), COST).total > FREE  # the premise
    app = make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(pilot, "big", "256")
        line = form.query_one(MemoryLine)
        await wait_for(pilot, lambda: line.verdict is not None and line.verdict.estimate.views == 512,
                       what="the estimate of batch 256")
        assert line.verdict.fits is False and line.has_class("-warning")
        line.scroll_visible(animate=False)
        await wait_text(pilot, "will not fit", f"--micro-batch {micro} needs")

        await pilot.press("ctrl+s")  # held: a warning, no run
        await wait_for(pilot, lambda: any("Press Launch again" in n for n in notices(app)), what="the warning")
        warning = next(n for n in notices(app) if "Press Launch again" in n)
        assert f"set micro-batch to {micro}" in warning
        assert isinstance(app.screen, NewRunScreen) and app.launcher.children == []
        assert not (runs_dir / "big").exists()

        await pilot.press("ctrl+s")  # confirmed: it launches
        await wait_screen(pilot, RunDetailScreen)
        assert app.screen.key == "big" and (runs_dir / "big").is_dir()


async def test_the_line_follows_the_fields_and_the_suggested_micro_batch_launches_at_once(runs_dir, fast_runs, given):
    micro = fitting_micro_batch(big_config(), FREE, cost=COST)
    app = make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(pilot, "fits", "256")
        line = form.query_one(MemoryLine)
        await wait_for(pilot, lambda: line.verdict is not None and line.verdict.fits is False, what="the warning")
        # the model's shape and the device are asked again when they change
        form.query_one("#cf-width", ConfigField).control.value = "16"
        await wait_for(pilot, lambda: given["shapes"] and given["shapes"][-1].width == 16, what="width 16 measured")
        form.query_one("#cf-device", ConfigField).control.value = "cpu"
        await wait_for(pilot, lambda: given["devices"] and given["devices"][-1] == "cpu", what="the device asked")
        form.query_one("#cf-width", ConfigField).control.value = "8"
        form.query_one("#cf-micro_batch", ConfigField).control.value = str(micro)
        await wait_for(pilot, lambda: line.verdict is not None and line.verdict.fits
                       and line.verdict.estimate.views == 2 * micro, what="the micro-batched estimate")
        assert not line.has_class("-warning")
        assert line.text.startswith("step ≈") and f"micro-batch {micro}" in line.text and "free on cpu" in line.text
        await pilot.press("ctrl+s")  # fits: no question
        await wait_screen(pilot, RunDetailScreen)
        assert not any("Press Launch again" in n for n in notices(app))


async def test_an_invalid_form_hides_the_line(runs_dir, given):
    app = make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        form = await open_form(pilot, "bad", "1")
        line = form.query_one(MemoryLine)
        await wait_for(pilot, lambda: form.error and not line.display, what="the line hidden")
        form.query_one("#cf-batch_size", ConfigField).control.value = "32"
        await wait_for(pilot, lambda: line.display and line.verdict is not None and line.verdict.fits,
                       what="the line back")


async def test_a_slurm_node_s_memory_is_not_this_machine_s(given):
    verdict = memory.estimate(big_config(), "slurm", memory.CostJob())
    assert verdict.fits is None and "the Slurm node" in verdict.text and given["devices"] == []


async def test_a_shape_is_measured_in_a_child_process():
    from core.training.memory import Shape

    cost = memory.CostJob().measure(Shape("resnet18", 8, 16, 32))  # the real `python -m core.training.memory`
    assert cost.measured_on == "meta" and cost.params > 0 and cost.per_view > 0
    job = memory.CostJob()
    job.cancel()
    with pytest.raises(RuntimeError, match="superseded"):
        job.measure(Shape("resnet18", 8, 16, 32))
