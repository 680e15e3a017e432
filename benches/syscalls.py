#!/usr/bin/env python3
"""System calls per echo request, from an strace log of one echo bench mode.

    E=$(ls -t $CARGO_TARGET_DIR/release/deps/echo-* | grep -v '\\.d$' | head -1)
    strace -f -e trace=recvfrom,sendto,read,write -o echo.strace \\
        "$E" --bench --profile-time 2 '^echo_tokio/pooled$'
    python3 benches/syscalls.py echo.strace

Requests are the 64-byte sends divided by two (the client's and the echo server's). Counted per
request: peeks (`MSG_PEEK`), other calls that failed with `EAGAIN`, and all reads and writes of
sockets; left out are the runtimes' wake-ups (reads and writes of 8 bytes that return 8) and
writes to stdout and stderr. A call
strace splits in two (`<unfinished ...>`, then `<... resumed>`) counts once.
"""

import re
import sys


def calls(path):
    pending = {}
    with open(path) as log:
        for line in log:
            match = re.match(r"(\d+)\s+(.*)", line.rstrip("\n"))
            if not match:
                continue
            pid, rest = match.groups()
            if rest.endswith("<unfinished ...>"):
                pending[pid] = rest[: -len("<unfinished ...>")]
                continue
            resumed = re.match(r"<\.\.\. (\w+) resumed>(.*)", rest)
            if resumed:
                rest = pending.pop(pid, resumed.group(1) + "(") + resumed.group(2)
            yield rest


def name(call):
    match = re.match(r"(\w+)\(", call)
    return match.group(1) if match else None


def main():
    socket_io = [
        call
        for call in calls(sys.argv[1])
        if name(call) in ("recvfrom", "sendto", "read", "write")
        and not re.match(r"write\([12],", call)
        and not re.search(r", 8\)\s+= 8$", call)
    ]
    sends = sum(1 for c in socket_io if name(c) in ("sendto", "write") and re.search(r"= 64$", c))
    requests = sends / 2
    if not requests:
        sys.exit("no 64-byte sends in the log")
    peeks = sum(1 for c in socket_io if "MSG_PEEK" in c)
    eagain = sum(1 for c in socket_io if "EAGAIN" in c and "MSG_PEEK" not in c)
    print(
        f"requests {requests:.0f}  peeks/request {peeks / requests:.3f}  "
        f"other EAGAIN/request {eagain / requests:.3f}  calls/request {len(socket_io) / requests:.2f}"
    )


if __name__ == "__main__":
    main()
