"""Generated scripts of posts, objections, withdrawals and re-deliveries, one per user."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable

from consentry.timeutil import now_us
from tests.reliability.workload import DAY_US, UserState, World

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


def script(rng: random.Random) -> list[Step]:
    kind = rng.choices(["quiet", "objector", "historic", "twin", "flip-flop", "late-import"], [3, 4, 3, 2, 2, 1])[0]
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
    else:  # an old objection, already withdrawn, imported after the user's posts were stored
        steps = posts(rng.randrange(1, 4)) + [imported("withdraw", 3), imported("object", 9)] + posts(1)
    return steps


async def play(world: World, users: int, concurrency: int = 12) -> None:
    """Run every user's script, interleaved: waves of steps of different users at once."""
    queues = {}
    for n in range(users):
        user = world.user(f"{world.tag}-u{n}z")  # z: no id is a prefix of another
        queues[user.user_id] = (user, deque(script(world.rng)))
    while queues:
        wave = world.rng.sample(sorted(queues), min(concurrency, len(queues)))
        steps = []
        for user_id in wave:
            user, queue = queues[user_id]
            steps.append(queue.popleft()(world, user))
            if not queue:
                del queues[user_id]
        await asyncio.gather(*steps)


async def play_late(world: World) -> None:
    """Once every user's state has settled and reached ingest: posts placed before, inside,
    on the edges of and after each user's intervals, and re-deliveries of earlier posts."""
    calls = []
    for user in world.users.values():
        known = sorted(e.received_at_us for e in user.events.values())
        created = [now_us()]
        if known:
            created += [known[0] - DAY_US, *known, *(t - 1 for t in known), *((a + b) // 2 for a, b in zip(known, known[1:]))]
            created = world.rng.sample(created, min(len(created), 4))
        calls += [world.publish_post(user, c, late=True) for c in created]
        if user.raw_posts and world.rng.random() < 0.5:
            calls.append(world.redeliver_post(user, late=True))
    for i in range(0, len(calls), 50):
        await asyncio.gather(*calls[i : i + 50])
