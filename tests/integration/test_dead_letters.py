"""Dead letters on the real cell: a malformed record and a non-deterministic workflow each take their
dead-letter path while the partition keeps flowing; after the fix, redrive finishes the parked run."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

from aiokafka import AIOKafkaProducer

from perdure.platform.cell import dead_letters
from perdure.platform.stores.databases import Databases

from .cell_harness import closed_runs, completed_activities, count_lines, eventually, payload_value
from .conftest import CellFactory

APP = dedent(
    """
    from perdure.tenants import App, workflow

    app = App("drift")

    def record(ledger: str, name: str) -> str:
        with open(ledger, "a") as out:
            out.write(name + "\\n")
        return name

    @app.activity
    def step(ledger: str, name: str) -> str:
        return record(ledger, name)

    @app.activity
    def charge(ledger: str, name: str) -> str:
        return record(ledger, name)

    ACTIVITIES = {"A": step, "B": charge}

    @app.workflow
    class Drift:
        def __init__(self) -> None:
            self.go = False

        @workflow.run
        async def run(self, ledger: str) -> list[str]:
            first = ACTIVITIES[FIRST]
            done = [await workflow.execute_activity(first, ledger, FIRST, start_to_close_timeout=10)]
            await workflow.wait_condition(lambda: self.go)
            done.append(
                await workflow.execute_activity(ACTIVITIES[SECOND], ledger, SECOND, start_to_close_timeout=10)
            )
            return done

        @workflow.signal
        def proceed(self) -> None:
            self.go = True

    @app.workflow
    class Plain:
        @workflow.run
        async def run(self, ledger: str, name: str) -> str:
            return await workflow.execute_activity(step, ledger, name, start_to_close_timeout=10)
    """
)


def _deploy(folder: Path, first: str, second: str) -> None:
    (folder / "drift_app.py").write_text(f"FIRST = {first!r}\nSECOND = {second!r}\n" + APP)


async def test_malformed_and_nondeterministic_work_is_parked_and_redriven(
    make_cell: CellFactory, tmp_path: Path, kafka_producer: AIOKafkaProducer
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    _deploy(code, "A", "B")
    cell = await make_cell(partitions=1, app="drift_app:app", pythonpath=[str(code)])
    process = await cell.start_process().start()
    ledger = tmp_path / "ledger"
    async with closed_runs(cell) as closed, await cell.client() as client:
        await client.start_workflow("Drift", str(ledger), id="drifter")

        async def first_step_done() -> None:
            assert await completed_activities(client, "drifter") == 1

        await eventually(first_step_done)
        process.kill(15)
        assert await process.wait() == 0

        _deploy(code, "B", "A")  # a bad deploy: the recorded first step no longer comes first
        process = await cell.start_process().start()
        topic = f"perdure.cell.{cell.cell}.tasks"
        await kafka_producer.send_and_wait(topic, b"{this is not json", key=f"{cell.namespace}/junk".encode())
        future = b'{"version": 7, "namespace": "x", "workflow_id": "y"}'
        await kafka_producer.send_and_wait(topic, future, key=f"{cell.namespace}/future".encode())
        await client.signal("drifter", "proceed")
        await client.start_workflow("Plain", str(ledger), "bystander", id="bystander")
        assert payload_value((await closed.wait({"bystander"}))["bystander"]) == "bystander"

        async def parked() -> dict[str, object]:
            description = await client.describe("drifter")
            assert description["status"] == "blocked"
            return description

        description = await eventually(parked)
        assert "non-determinism at event 2" in str(description["blocked_reason"])
        databases = Databases.connect(cell.settings, cell.cell)
        record = await databases.control.get_cell(cell.cell)
        letters = await dead_letters.read_dead_letters(cell.settings, record)
        runs = await dead_letters.parked_runs(databases, cell.settings, record)
        await databases.close()
        assert [letter.reason.split(":")[0] for letter in letters] == [
            "malformed envelope",
            "unknown envelope version 7 (this engine reads 1)",
        ]
        assert [letter.key for letter in letters] == [f"{cell.namespace}/junk", f"{cell.namespace}/future"]
        assert [r.id for r in runs] == [f"{cell.namespace}/drifter"]

        # The fix: deploy the code that matches the history again, then redrive.
        process.kill(15)
        assert await process.wait() == 0
        _deploy(code, "A", "B")
        await cell.start_process().start()
        redriven = await dead_letters.redrive(cell.settings, record, f"{cell.namespace}/drifter")
        assert redriven == {"dead_letters": [], "runs": [f"{cell.namespace}/drifter"]}
        result = (await closed.wait({"drifter"}))["drifter"]
    assert payload_value(result) == ["A", "B"]
    assert count_lines(ledger) == {"A": 1, "B": 1, "bystander": 1}
