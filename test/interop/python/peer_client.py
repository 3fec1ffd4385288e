#!/usr/bin/python3
"""Interop peer for Switchboard's tests: python-websockets' client driven by a JSON plan.

Usage: /usr/bin/python3 peer_client.py '<plan as JSON>'

The plan lists connections, opened one after the other:

    {"connections": [{"name": "main", "url": "ws://127.0.0.1:1234/echo",
                      "compression": "deflate" | null, "subprotocols": ["a"] | null,
                      "maxSize": 33554432, "steps": [{"op": "echo", "text": "hi"}, ...]}]}

Steps (each result echoes the step's "op"):
  echo            {"text": s} or {"hex": h}: send one message, wait for its echo.
  echo_fragments  {"texts": [...]} or {"hexes": [...]}: send one fragmented message from an
                  async iterator of fragments, wait for the echo.
  echo_large      {"size": n, "kind": "binary" | "text"}: send an n-byte message, wait for the echo.
  ping            {"hex": h}: ping with that payload and wait for the matching pong.
  recv            wait for one message.
  close           {"code": c, "reason": r}: run the closing handshake.
  wait_closed     wait until the server closes the connection.

Prints one JSON object on stdout. A step that fails records its error and ends that connection;
the remaining connections still run. Exit status: 0 when the plan ran (whatever the results),
3 when python-websockets is missing, 2 on a malformed plan.
"""

import asyncio
import hashlib
import json
import os
import sys

try:
    import websockets
    from websockets.exceptions import ConnectionClosed, InvalidStatusCode
except ImportError as exc:  # CI installs python3-websockets; say so instead of a traceback.
    print(
        json.dumps(
            {
                "ok": False,
                "error": "python-websockets is not importable by %s: %s "
                "(install the Debian package python3-websockets)" % (sys.executable, exc),
            }
        )
    )
    sys.exit(3)

STEP_TIMEOUT = 15.0
TEXT_UNIT = "héllo wörld ✓ € 🚀 日本語 "


def summary(data):
    """What the tests compare: kind, byte length, digest, and the bytes themselves when small."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    out = {
        "kind": "text" if isinstance(data, str) else "binary",
        "length": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    if len(raw) <= 256:
        out["hex"] = raw.hex()
    return out


def large_message(size, kind):
    if kind == "binary":
        return os.urandom(size)
    unit_bytes = len(TEXT_UNIT.encode("utf-8"))
    text = TEXT_UNIT * (size // unit_bytes)
    return text + "a" * (size - len(text.encode("utf-8")))


async def fragments(items):
    for item in items:
        await asyncio.sleep(0)
        yield item


async def echo_of(ws, message):
    await asyncio.wait_for(ws.send(message), STEP_TIMEOUT)
    reply = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
    result = summary(reply)
    result["sent"] = summary(message)
    result["equal"] = type(reply) is type(message) and reply == message
    return result


async def run_step(ws, step):
    op = step["op"]
    if op == "echo":
        message = step["text"] if "text" in step else bytes.fromhex(step["hex"])
        return await echo_of(ws, message)
    if op == "echo_fragments":
        if "texts" in step:
            pieces = list(step["texts"])
            whole = "".join(pieces)
        else:
            pieces = [bytes.fromhex(h) for h in step["hexes"]]
            whole = b"".join(pieces)
        await asyncio.wait_for(ws.send(fragments(pieces)), STEP_TIMEOUT)
        reply = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
        result = summary(reply)
        result["sent"] = summary(whole)
        result["equal"] = type(reply) is type(whole) and reply == whole
        return result
    if op == "echo_large":
        return await echo_of(ws, large_message(step["size"], step["kind"]))
    if op == "ping":
        waiter = await asyncio.wait_for(ws.ping(bytes.fromhex(step["hex"])), STEP_TIMEOUT)
        await asyncio.wait_for(waiter, STEP_TIMEOUT)
        return {"pong": True}
    if op == "recv":
        return summary(await asyncio.wait_for(ws.recv(), STEP_TIMEOUT))
    if op == "close":
        await asyncio.wait_for(ws.close(step["code"], step.get("reason", "")), STEP_TIMEOUT)
        return {"closeCode": ws.close_code, "closeReason": ws.close_reason}
    if op == "wait_closed":
        await asyncio.wait_for(ws.wait_closed(), STEP_TIMEOUT)
        return {"closeCode": ws.close_code, "closeReason": ws.close_reason}
    raise ValueError("unknown step %r" % op)


async def run_connection(spec):
    out = {"name": spec.get("name"), "connected": False, "steps": [], "error": None}
    try:
        ws = await websockets.connect(
            spec["url"],
            compression=spec.get("compression"),
            subprotocols=spec.get("subprotocols"),
            max_size=spec.get("maxSize", 2**25),
            ping_interval=None,  # no keepalive pings: the server records every ping it gets
            open_timeout=STEP_TIMEOUT,
            close_timeout=5,
        )
    except InvalidStatusCode as exc:
        out["connectError"] = {"type": "InvalidStatusCode", "status": exc.status_code}
        return out
    except Exception as exc:  # noqa: BLE001 - every failure is data for the test
        out["connectError"] = {"type": type(exc).__name__, "message": str(exc)}
        return out
    out["connected"] = True
    out["subprotocol"] = ws.subprotocol
    out["extensions"] = [ext.name for ext in ws.extensions]
    out["extensionsHeader"] = ws.response_headers.get("Sec-WebSocket-Extensions")
    try:
        for step in spec.get("steps", []):
            result = await run_step(ws, step)
            result["op"] = step["op"]
            out["steps"].append(result)
    except ConnectionClosed as exc:
        out["error"] = "ConnectionClosed: %s" % exc
        out["closeCode"] = ws.close_code
        out["closeReason"] = ws.close_reason
    except asyncio.TimeoutError:
        out["error"] = "timed out in step %d" % len(out["steps"])
    except Exception as exc:  # noqa: BLE001
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
    finally:
        if not ws.closed:
            ws.transport.abort()
    return out


async def main():
    try:
        plan = json.loads(sys.argv[1])
        specs = plan["connections"]
    except (IndexError, ValueError, KeyError) as exc:
        print(json.dumps({"ok": False, "error": "bad plan: %s" % exc}))
        sys.exit(2)
    results = [await run_connection(spec) for spec in specs]
    print(
        json.dumps(
            {
                "ok": True,
                "websockets": websockets.__version__,
                "python": sys.version.split()[0],
                "connections": results,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
