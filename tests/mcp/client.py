"""An agent's session with rdev-api's /mcp, through the official MCP Python SDK.

    client.py URL KEY READER_KEY          every check below, against one server
    client.py --calls N URL KEY           N list_projects and run_command calls, each on a new
                                          connection (the test puts replicas behind URL)

Exits non-zero, with the reason on stderr, at the first check that fails. READER_KEY is a key
without files:write.
"""

import asyncio
import base64
import sys

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


def check(condition, what):
    if not condition:
        sys.exit(f"client.py: {what}")


def client(key, fresh_connections=False):
    limits = httpx2.Limits(max_keepalive_connections=0) if fresh_connections else httpx2.Limits()
    return httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120, limits=limits)


async def session_with(url, key, body, fresh_connections=False):
    async with client(key, fresh_connections) as http:
        async with streamable_http_client(url, http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as session:
                info = await session.initialize()
                check(info.server_info.name == "rdev-api", f"server name {info.server_info.name}")
                return await body(session)


async def tool_names(url, key):
    async def names(session):
        return {tool.name for tool in (await session.list_tools()).tools}

    return await session_with(url, key, names)


async def everything(url, key, reader_key):
    names = await tool_names(url, key)
    expected = {"list_projects", "run_command", "queue_command", "get_command", "cancel_command",
                "list_files", "read_file", "write_file", "delete_file", "create_session", "run_in_session"}
    check(names == expected, f"an admin key's tools: {sorted(names)}")
    reader_names = await tool_names(url, reader_key)
    check("read_file" in reader_names and "write_file" not in reader_names and "delete_file" not in reader_names,
          f"a key without files:write lists {sorted(reader_names)}")

    async def body(session):
        # Output as progress notifications, in order, then the exit code.
        seen = []

        async def on_progress(progress, total, message):
            seen.append((progress, message))

        result = await session.call_tool(
            "run_command",
            {"project": "hello", "command": "for i in 1 2 3; do echo line-$i; sleep 0.2; done; exit 3"},
            progress_callback=on_progress,
        )
        check(not result.is_error, f"run_command: {result.content}")
        check(result.structured_content["exit_code"] == 3, f"exit code {result.structured_content}")
        check(result.structured_content["stdout"] == "line-1\nline-2\nline-3\n", f"stdout {result.structured_content}")
        text = "".join(message for _, message in seen)
        check(all(f"line-{i}" in text for i in (1, 2, 3)), f"progress messages {seen}")
        check(text.index("line-1") < text.index("line-2") < text.index("line-3"), f"progress in order {seen}")
        steps = [progress for progress, _ in seen]
        check(steps == sorted(steps) and len(set(steps)) == len(steps), f"progress increases {steps}")

        # 10 MiB of output: its head and its tail, and exactly what was left out.
        big = await session.call_tool("run_command", {"project": "hello", "command": "yes 0123456789abcde | head -c 10485760"})
        out = big.structured_content
        check(not big.is_error and out["exit_code"] == 0, f"10 MiB run {big.content}")
        check(len(out["stdout"]) == 16384 and len(out["stdout_tail"]) == 16384, f"head {len(out['stdout'])} tail {len(out['stdout_tail'])}")
        check(out["stdout_omitted"]["bytes"] == 10485760 - 32768, f"omitted {out['stdout_omitted']}")
        check(out["stdout"].startswith("0123456789abcde\n"), f"head text {out['stdout'][:40]!r}")
        check("bytes omitted" in big.content[0].text, "the summary says what was omitted")

        # Every byte value, written as base64 and read back.
        every_byte = bytes(range(256))
        written = await session.call_tool("write_file", {"project": "hello", "path": "mcp/bytes.bin",
                                                         "content": base64.b64encode(every_byte).decode(), "encoding": "base64"})
        check(not written.is_error, f"write_file {written.content}")
        read = await session.call_tool("read_file", {"project": "hello", "path": "mcp/bytes.bin"})
        check(read.structured_content["encoding"] == "base64", f"read_file encoding {read.structured_content}")
        check(base64.b64decode(read.structured_content["content"]) == every_byte, "the 256 byte values come back")
        etag = read.structured_content["etag"]
        check(etag == written.structured_content["etag"], f"etags {etag} {written.structured_content}")

        # A replacement based on an old version is refused, and the newer content kept.
        await session.call_tool("write_file", {"project": "hello", "path": "mcp/bytes.bin", "content": "someone else\n"})
        stale = await session.call_tool("write_file", {"project": "hello", "path": "mcp/bytes.bin", "content": "mine\n", "if_match": etag})
        check(stale.is_error and stale.structured_content["error"]["code"] == "PRECONDITION_FAILED", f"if_match conflict {stale.content}")
        kept = await session.call_tool("read_file", {"project": "hello", "path": "mcp/bytes.bin"})
        check(kept.structured_content["content"] == "someone else\n", f"kept {kept.structured_content}")

        # A session keeps its folder across calls.
        created = await session.call_tool("create_session", {"project": "hello"})
        session_id = created.structured_content["id"]
        moved = await session.call_tool("run_in_session", {"session_id": session_id, "command": "cd src"})
        check(not moved.is_error and moved.structured_content["exit_code"] == 0, f"cd {moved.content}")
        where = await session.call_tool("run_in_session", {"session_id": session_id, "command": "pwd"})
        check(where.structured_content["stdout"].strip().endswith("/hello/src"), f"pwd {where.structured_content}")

        # Queued, then followed to its end with get_command, resumably.
        queued = await session.call_tool("queue_command", {"project": "hello", "command": "echo queued-1; echo queued-2"})
        command_id = queued.structured_content["id"]
        after, output, complete = 0, "", False
        for _ in range(60):
            got = await session.call_tool("get_command", {"id": command_id, "after": after, "wait_secs": 1})
            check(not got.is_error, f"get_command {got.content}")
            output += "".join(event.get("text", "") for event in got.structured_content["output"])
            after, complete = got.structured_content["next_after"], got.structured_content["complete"]
            if complete:
                break
        check(complete and output == "queued-1\nqueued-2\n", f"queued output {output!r}")
        check(got.structured_content["command"]["status"] == "succeeded", f"status {got.structured_content}")

        # The rest of run_command's arguments reach the command.
        ran = await session.call_tool("run_command", {"project": "hello", "command": 'echo "$WHO in $(basename "$PWD")"; wc -c',
                                                      "workdir": "src", "env": {"WHO": "agent"}, "stdin": "12345", "timeout_secs": 30})
        check(ran.structured_content["stdout"] == "agent in src\n5\n", f"workdir, env, stdin {ran.structured_content}")

        # Listing, a capped read, a stale delete refused, then the delete.
        listed = await session.call_tool("list_files", {"project": "hello", "path": "mcp"})
        check([e["name"] for e in listed.structured_content["entries"]] == ["bytes.bin"], f"list_files {listed.structured_content}")
        capped = await session.call_tool("read_file", {"project": "hello", "path": "mcp/bytes.bin", "max_bytes": 4})
        check(capped.is_error and capped.structured_content["error"]["code"] == "VALIDATION_FAILED", f"read cap {capped.content}")
        stale_delete = await session.call_tool("delete_file", {"project": "hello", "path": "mcp/bytes.bin", "if_match": etag})
        check(stale_delete.is_error and stale_delete.structured_content["error"]["code"] == "PRECONDITION_FAILED", f"stale delete {stale_delete.content}")
        deleted = await session.call_tool("delete_file", {"project": "hello", "path": "mcp", "recursive": True})
        check(not deleted.is_error, f"delete {deleted.content}")
        gone = await session.call_tool("read_file", {"project": "hello", "path": "mcp/bytes.bin"})
        check(gone.is_error and gone.structured_content["error"]["code"] == "NOT_FOUND", f"after delete {gone.content}")

        # A queued command cancelled while it runs.
        long = await session.call_tool("queue_command", {"project": "hello", "command": "sleep 30"})
        cancelled = await session.call_tool("cancel_command", {"id": long.structured_content["id"]})
        check(not cancelled.is_error and cancelled.structured_content["status"] in ("cancelled", "running"), f"cancel {cancelled.content}")
        for _ in range(60):
            state = await session.call_tool("get_command", {"id": long.structured_content["id"], "wait_secs": 1})
            if state.structured_content["command"]["status"] == "cancelled":
                break
        check(state.structured_content["command"]["status"] == "cancelled", f"cancelled {state.structured_content['command']}")

        # A bad argument is a tool error with the API's code.
        bad = await session.call_tool("run_command", {"project": "hello", "command": "true", "timeout_secs": 0})
        check(bad.is_error and bad.structured_content["error"]["code"] == "VALIDATION_FAILED", f"validation {bad.content}")

    await session_with(url, key, body)

    async def reader(session):
        refused = await session.call_tool("write_file", {"project": "hello", "path": "x.txt", "content": "x"})
        check(refused.is_error and refused.structured_content["error"]["code"] == "FORBIDDEN", f"scope {refused.content}")

    await session_with(url, reader_key, reader)


async def calls(url, key, count):
    async def body(session):
        for i in range(count):
            projects = await session.call_tool("list_projects", {})
            check(not projects.is_error, f"list_projects #{i}: {projects.content}")
            ran = await session.call_tool("run_command", {"project": "hello", "command": f"echo call-{i}"})
            check(not ran.is_error and ran.structured_content["stdout"] == f"call-{i}\n", f"run #{i}: {ran.content}")

    await session_with(url, key, body, fresh_connections=True)


if __name__ == "__main__":
    if sys.argv[1] == "--calls":
        asyncio.run(calls(sys.argv[3], sys.argv[4], int(sys.argv[2])))
    else:
        asyncio.run(everything(sys.argv[1], sys.argv[2], sys.argv[3]))
    print("client.py: all checks passed")
