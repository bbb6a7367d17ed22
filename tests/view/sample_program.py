"""The program the viewer's tests record (and scripts/view-screenshots): a loop, a raising
call, an asyncio task, a thread, and a value that looks like markup."""

import asyncio
import threading


def parse(text):
    total = 0
    for ch in text:
        if ch.isdigit():
            total = total * 10 + int(ch)
        else:
            raise ValueError(f"not a digit: {ch!r}")
    return total


def worker(items):
    return [parse(s) for s in items]


def label(name):
    return f"[{name}]"


async def fetch(n):
    await asyncio.sleep(0)
    return parse(str(n))


async def main():
    return await asyncio.gather(asyncio.create_task(fetch(12)), asyncio.create_task(fetch(34)))


def run():
    side = threading.Thread(target=worker, args=(["7", "89"],), name="side")
    side.start()
    side.join()
    asyncio.run(main())
    worker(["1", "23"])
    label("<img src=x onerror=document.title='owned'>")
    try:
        parse("4x2")
    except ValueError:
        pass


run()
