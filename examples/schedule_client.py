"""The client example of docs/schedules.md: a tenant app makes a schedule of its namespace, looks at it,
pauses it and deletes it, through its own connection string (``PERDURE_CONNECTION``)."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from examples.orders import ExpressOrder
from perdure.tenants import Client, IntervalSpec, ScheduleSpec


async def main() -> None:
    async with await Client.connect(os.environ["PERDURE_CONNECTION"]) as client:
        every_10s = ScheduleSpec(intervals=(IntervalSpec(every=timedelta(seconds=10)),))
        schedule = await client.create_schedule(
            "express", ExpressOrder.run, ["o-scheduled"], spec=every_10s, overlap="allow_all"
        )
        await asyncio.sleep(25)  # let it take two or three actions
        described = await schedule.describe()
        print(described["counts"], described["next_action_times"][:2])
        print(await schedule.pause("looked at it"))  # "paused"
        print(await client.list_schedules())
        await schedule.delete()


if __name__ == "__main__":
    asyncio.run(main())
