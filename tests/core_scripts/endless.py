"""A pipeline for the signal tests: endless sync source > slow sink, run by global_start().

argv[1]: "drain" (normal), "fail" (the sink raises on the 3rd item), "stuck" (the sink
blocks forever once ready, so only a second signal ends the run).
Prints "ready" once the sink has an item, and at the end "emitted=N received=M".
"""

from __future__ import annotations

import sys
import time

from nanostream_trio import NanoNode

mode = sys.argv[1]


class Counter(NanoNode):
    def __init__(self) -> None:
        self.emitted = 0
        super().__init__()

    def generator(self):  # type: ignore[no-untyped-def]
        while True:
            time.sleep(0.001)
            self.emitted += 1
            yield self.emitted


class Sink(NanoNode):
    def __init__(self) -> None:
        self.received: list[int] = []
        super().__init__(capacity=20)

    async def process_item(self, item: int) -> None:
        import trio

        self.received.append(item)
        if len(self.received) == 1:
            print("ready", flush=True)
        if mode == "fail" and len(self.received) == 3:
            raise ValueError(f"bad item {item}")
        if mode == "stuck":
            await trio.sleep_forever()
        await trio.sleep(0.002)


source, sink = Counter(), Sink()
source > sink
try:
    source.global_start()
finally:
    in_order = sink.received == list(range(1, len(sink.received) + 1))
    print(f"emitted={source.emitted} received={len(sink.received)} in_order={in_order}", flush=True)
