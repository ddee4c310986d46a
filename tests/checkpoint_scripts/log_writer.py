"""The log writer of the kill -9 tail scenario: numbered JSON lines, rotated now and then.

argv: LOG RATE ROTATE_EVERY SEED

Appends ``{"n": 1}``, ``{"n": 2}``, ... to LOG at about RATE lines a second, in
bursts every 10 ms, each burst one ``write`` of whole lines. Every ROTATE_EVERY
lines it rotates LOG, choosing (seeded) between

* *rename*: LOG becomes ``LOG.<k>`` and a new LOG is created, and
* *copytruncate*: LOG is copied to ``LOG.<k>`` and then truncated in place
  (the writer keeps its descriptor, opened for appending),

with ``k`` counting rotations, so no rotated file is ever overwritten or
deleted (the lines in it are still there to be read by a pipeline that was
down during the rotation). It runs until SIGTERM, then prints the last number
written and exits.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sys
import time

log, rate, rotate_every, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
choose = random.Random(seed)
stopping = False


def stop(signum: int, frame: object) -> None:
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)

handle = open(log, "a", encoding="utf-8")
number = since_rotation = rotations = 0
per_burst = max(1, rate // 100)
started = time.monotonic()
while not stopping:
    burst = "".join(f'{{"n": {number + i}}}\n' for i in range(1, per_burst + 1))
    handle.write(burst)
    handle.flush()
    number += per_burst
    since_rotation += per_burst
    if since_rotation >= rotate_every:
        since_rotation = 0
        rotations += 1
        rotated = f"{log}.{rotations}"
        if choose.random() < 0.5:
            handle.close()
            os.rename(log, rotated)
            handle = open(log, "a", encoding="utf-8")
        else:
            shutil.copyfile(log, rotated)
            handle.truncate(0)
    # Keep to the rate on average (bursts every 10 ms).
    delay = started + number / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
handle.close()
print(number, rotations, flush=True)
