"""Generated scripts of posts, objections, withdrawals and re-deliveries, one per user."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable

from consentry.timeutil import now_us
from tests.reliability.workload import DAY_US, TOLD_LATE, UserState, World

Step = Callable[[World, UserState], Awaitable[None]]


def created_choice(world: World, user: UserState) -> int:
    """Before, during or after the user's objection intervals, and on their very edges."""
    now = now_us()
    known = sorted(e.received_at_us for e in user.events.values())
    choices = [now, now, now - world.rng.randrange(1, 60 * DAY_US)]
    for t in known:
        choices += [t, t - 1, t + 1]
    choices += [(a + b) // 2 for a, b in zip(known, known[1:])]
    return world.rng.choice(choices)


def post(world: World, user: UserState) -> Awaitable[None]:
    return world.publish_post(user, created_choice(world, user))


async def twin(world: World, user: UserState) -> None:
    """An objection and a post of the same user at the same instant, either first."""
    calls = [world.publish_post(user, now_us()), world.object_api(user)]
    world.rng.shuffle(calls)
    await asyncio.gather(*calls)


def script(rng: random.Random) -> tuple[str, list[Step]]:
    kind = rng.choices(["quiet", "objector", "historic", "twin", "flip-flop", "late-import", "told-late"], [3, 4, 3, 2, 2, 1, 1])[0]
    posts = lambda n: [post] * n  # noqa: E731
    redeliver_post = lambda w, u: w.redeliver_post(u)  # noqa: E731
    redeliver_event = lambda w, u: w.redeliver_event(u)  # noqa: E731
    obj = lambda w, u: w.object_api(u)  # noqa: E731
    withdraw = lambda w, u: w.object_api(u, "withdraw")  # noqa: E731
    now = now_us()

    def imported(kind_: str, days_ago: float) -> Step:
        return lambda w, u: w.import_event(u, kind_, now - int(days_ago * DAY_US))

    steps: list[Step]
    if kind == "quiet":
        steps = posts(rng.randrange(1, 5)) + ([redeliver_post] if rng.random() < 0.5 else [])
    elif kind == "objector":
        steps = posts(rng.randrange(0, 3)) + [obj] + posts(rng.randrange(0, 3))
        if rng.random() < 0.5:
            steps += [redeliver_event]
        if rng.random() < 0.6:
            steps += [withdraw] + posts(rng.randrange(1, 3))
        steps += [redeliver_post] if rng.random() < 0.5 else []
    elif kind == "historic":
        start = rng.uniform(10, 50)
        steps = posts(rng.randrange(0, 2)) + [imported("object", start)]
        if rng.random() < 0.7:
            steps += [imported("withdraw", rng.uniform(1, start - 1))]
        steps += posts(rng.randrange(1, 4)) + ([redeliver_event] if rng.random() < 0.5 else [])
    elif kind == "twin":
        steps = posts(rng.randrange(0, 2)) + [twin] + ([redeliver_post] if rng.random() < 0.5 else [])
    elif kind == "flip-flop":
        steps = []
        for _ in range(rng.randrange(2, 4)):
            steps += [obj] + posts(rng.randrange(0, 2)) + [withdraw] + posts(rng.randrange(0, 2))
        steps += [redeliver_event, redeliver_post]
        if rng.random() < 0.5:
            steps += [obj]
    elif kind == "late-import":  # an old objection, already withdrawn, imported after the user's posts were stored
        steps = posts(rng.randrange(1, 4)) + [imported("withdraw", 3), imported("object", 9)] + posts(1)
    else:  # told late: posts held for want of a notice, then one sent long ago is published: released
        tell = lambda w, u: w.tell(u, now - int(rng.uniform(31, 90) * DAY_US))  # noqa: E731
        steps = posts(rng.randrange(1, 4)) + [tell] + posts(rng.randrange(0, 2)) + ([redeliver_post] if rng.random() < 0.5 else [])
    return kind, steps


async def play(world: World, users: int, concurrency: int = 12, pace: Callable[[], float] = lambda: 0.0) -> None:
    """Run every user's script, interleaved: waves of steps of different users at once (after
    the notices of the users told beforehand are applied and read by ingest)."""
    queues = {}
    for n in range(users):
        kind, steps = script(world.rng)
        user = world.user(f"{world.tag}-u{n}z", TOLD_LATE if kind == "told-late" else None)  # z: no id is a prefix of another
        queues[user.user_id] = (user, deque(steps))
    await world.tell_everyone()
    while queues:
        wave = world.rng.sample(sorted(queues), min(concurrency, len(queues)))
        steps = []
        for user_id in wave:
            user, queue = queues[user_id]
            steps.append(queue.popleft()(world, user))
            if not queue:
                del queues[user_id]
        await asyncio.gather(*steps)
        world.counts["waves"] += 1
        if delay := pace():
            await asyncio.sleep(delay)  # pacing, not synchronisation: keeps the load going while workers churn


async def play_late(world: World) -> None:
    """Once every user's state has settled (every event enforced): posts placed before, inside,
    on the edges of and after each user's intervals, and re-deliveries of earlier posts; all
    sent after the user's last event was applied, so each eligible one is required."""
    calls = []
    for user in world.users.values():
        known = sorted(e.received_at_us for e in user.events.values())
        created = [now_us()]
        if known:
            created += [known[0] - DAY_US, *known, *(t - 1 for t in known), *((a + b) // 2 for a, b in zip(known, known[1:]))]
            created = world.rng.sample(created, min(len(created), 4))
        calls += [world.publish_post(user, c) for c in created]
        if user.raw_posts and world.rng.random() < 0.5:
            calls.append(world.redeliver_post(user))
    for i in range(0, len(calls), 50):
        await asyncio.gather(*calls[i : i + 50])
