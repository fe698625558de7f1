"""The official E2B SDK (PyPI `e2b`, 2.x) driving e2b-local through its whole lifecycle.

Run by `crates/infra-local/tests/sdk_conformance.rs`, which installs the SDK into a virtual environment and
starts e2b-local, with E2B_API_KEY, E2B_API_URL and E2B_SANDBOX_URL pointing at it. Every step asserts
what E2B would answer; the first failure ends the run with its step named and a non-zero exit.
"""

import importlib.metadata
import os
import sys
import time
import traceback
import uuid

import httpx

from e2b import (
    CommandExitException,
    FileType,
    NotFoundException,
    Sandbox,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
)
from e2b.api.client.api.sandboxes import post_sandboxes
from e2b.api.client.models import NewSandbox
from e2b.api.client_sync import get_api_client
from e2b.connection_config import ConnectionConfig
from e2b.exceptions import SandboxException

SANDBOX_URL = os.environ["E2B_SANDBOX_URL"]
RUN = uuid.uuid4().hex
STEP = ["start"]


def step(name):
    STEP[0] = name
    print(f"step: {name}", flush=True)


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def eventually(what, probe, seconds=20.0):
    """Polls `probe` until it returns a true value, or fails naming `what`."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - a probe may fail while the thing starts
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{what}: last saw {last!r}")


def through_proxy(sandbox, port, path="/"):
    """A request to a sandbox port through e2b-local's host-form proxy: the host the SDK builds for it."""
    return httpx.get(
        f"{SANDBOX_URL}{path}",
        headers={"Host": sandbox.get_host(port)},
        timeout=5,
    )


def main():
    step("create (v2): secure, with metadata")
    sbx = Sandbox.create(template="base", timeout=120, metadata={"suite": RUN, "kind": "v2"})
    check(sbx.sandbox_id, "a sandbox id")
    check(sbx._envd_access_token, "a v2 sandbox is secure: it has an envd access token")
    check(sbx.is_running(), "is_running right after create")

    step("commands.run (foreground): output and exit code")
    result = sbx.commands.run("echo hello; echo oops >&2")
    check(result.exit_code == 0, f"exit code {result.exit_code}")
    check(result.stdout == "hello\n", f"stdout {result.stdout!r}")
    check(result.stderr == "oops\n", f"stderr {result.stderr!r}")
    check(result.error is None, f"no error on success, got {result.error!r}")
    streamed = []
    sbx.commands.run("for i in 1 2 3; do echo line$i; done", on_stdout=streamed.append)
    check("".join(streamed) == "line1\nline2\nline3\n", f"streamed {streamed!r}")
    check(sbx.commands.run("pwd").stdout.strip().endswith("/home"), "the default cwd is the home")

    step("commands.run: a non-zero exit raises with its code and error")
    try:
        sbx.commands.run("echo bad >&2; exit 3")
        raise AssertionError("exit 3 did not raise")
    except CommandExitException as e:
        check(e.exit_code == 3, f"exit code {e.exit_code}")
        check(e.error == "exit status 3", f"error {e.error!r}")
        check(e.stderr == "bad\n", f"stderr {e.stderr!r}")

    step("commands.run (background): the stream stays open until the command ends")
    handle = sbx.commands.run("echo bg-start; sleep 1; echo bg-end", background=True)
    check(handle.pid > 0, f"pid {handle.pid}")
    done = handle.wait()
    check(done.exit_code == 0, f"background exit {done.exit_code}")
    check(done.stdout == "bg-start\nbg-end\n", f"background stdout {done.stdout!r}")
    failing = sbx.commands.run("sleep 0.5; exit 5", background=True)
    try:
        failing.wait()
        raise AssertionError("a background exit 5 did not raise")
    except CommandExitException as e:
        check(e.exit_code == 5 and e.error == "exit status 5", f"{e.exit_code} {e.error!r}")
    sleeper = sbx.commands.run("sleep 60", background=True)
    check(sleeper.kill(), "kill a background command")
    try:
        sleeper.wait()
        raise AssertionError("a killed command did not raise")
    except CommandExitException as e:
        check(e.exit_code == -1, f"killed exit code {e.exit_code}")

    step("files: write, read, list, missing")
    info = sbx.files.write("/home/user/hello.txt", "hello world")
    check(info.path == "/home/user/hello.txt", f"written {info.path}")
    sbx.files.write("notes/a.txt", b"relative to the home")
    check(sbx.files.read("/home/user/hello.txt") == "hello world", "read back")
    check(sbx.files.read("notes/a.txt", format="bytes") == b"relative to the home", "bytes")
    check(sbx.commands.run("cat /home/user/hello.txt").stdout == "hello world", "commands see files")
    sbx.commands.run("mkdir -p /home/user/project && echo made > /home/user/project/by_cmd.txt")
    check(sbx.files.read("/home/user/project/by_cmd.txt") == "made\n", "files see commands")
    entries = {e.name: e for e in sbx.files.list("/home/user")}
    check("hello.txt" in entries and entries["hello.txt"].type == FileType.FILE, f"list {entries}")
    check("notes" in entries and entries["notes"].type == FileType.DIR, f"list {entries}")
    check(sbx.files.exists("notes/a.txt"), "exists")
    check(not sbx.files.exists("nope.txt"), "does not exist")
    try:
        sbx.files.read("/home/user/missing.txt")
        raise AssertionError("a missing file did not raise")
    except NotFoundException:
        pass

    step("envd refuses a call without the access token")
    bare = httpx.get(
        f"{SANDBOX_URL}/files",
        params={"path": "/home/user/hello.txt"},
        headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"},
        timeout=5,
    )
    check(bare.status_code == 401, f"no token: {bare.status_code} {bare.text}")

    step("preview through the host-form proxy")
    server = sbx.commands.run(
        "exec python3 -m http.server $PORT --bind 127.0.0.1",
        envs={"PORT": "8000"},
        background=True,
    )
    check(sbx.get_host(8000) == f"8000-{sbx.sandbox_id}.{sbx.sandbox_domain}", sbx.get_host(8000))
    page = eventually(
        "the preview answers",
        lambda: (r := through_proxy(sbx, 8000, "/hello.txt")).status_code == 200 and r,
    )
    check(page.text == "hello world", f"preview body {page.text!r}")
    closed = through_proxy(sbx, 9999)
    check(closed.status_code == 502, f"closed port {closed.status_code}")
    check(closed.json()["message"] == "The sandbox is running but port is not open", closed.text)
    check(closed.json()["port"] == 9999, closed.text)

    step("set_timeout and get_info")
    sbx.set_timeout(300)
    details = sbx.get_info()
    check(details.sandbox_id == sbx.sandbox_id, "info of the right sandbox")
    check(details.metadata == {"suite": RUN, "kind": "v2"}, f"metadata {details.metadata}")
    check(details.state == SandboxState.RUNNING, f"state {details.state}")

    step("list with metadata and state filters")
    running = Sandbox.list(
        query=SandboxQuery(metadata={"suite": RUN}, state=[SandboxState.RUNNING])
    ).next_items()
    check([s.sandbox_id for s in running] == [sbx.sandbox_id], f"running {running}")
    check(
        Sandbox.list(query=SandboxQuery(metadata={"suite": "other"})).next_items() == [],
        "another suite's metadata lists nothing",
    )

    step("pause: paused, then already paused; the proxy no longer finds it")
    check(sbx.pause() is True, "pause")
    check(sbx.pause() is False, "a second pause reads as already paused")
    check(not sbx.is_running(), "is_running after pause")
    paused = Sandbox.list(
        query=SandboxQuery(metadata={"suite": RUN}, state=[SandboxState.PAUSED])
    ).next_items()
    check([s.sandbox_id for s in paused] == [sbx.sandbox_id], f"paused {paused}")
    gone = through_proxy(sbx, 8000)
    check(gone.status_code == 502, f"paused preview {gone.status_code}")
    check(gone.json()["message"] == "The sandbox was not found", gone.text)

    step("connect resumes it, processes and files kept")
    again = Sandbox.connect(sbx.sandbox_id, timeout=120)
    check(again.is_running(), "running after connect")
    check(again.files.read("/home/user/hello.txt") == "hello world", "files kept")
    check(again.commands.run("echo back").stdout == "back\n", "commands after resume")
    eventually(
        "the dev server still answers after the resume",
        lambda: through_proxy(again, 8000, "/hello.txt").status_code == 200,
    )
    check(server.pid > 0, "the server's handle")

    step("create (v1): secure on request, then connect")
    client = get_api_client(ConnectionConfig())
    created = post_sandboxes.sync_detailed(
        client=client,
        body=NewSandbox(template_id="base", secure=True, timeout=60, metadata={"suite": RUN}),
    )
    check(created.status_code == 201, f"v1 create {created.status_code} {created.content!r}")
    check(isinstance(created.parsed.envd_access_token, str), "a secure v1 sandbox has a token")
    v1 = Sandbox.connect(created.parsed.sandbox_id)
    check(v1.commands.run("echo v1").stdout == "v1\n", "a v1 sandbox runs commands")
    plain = post_sandboxes.sync_detailed(client=client, body=NewSandbox(template_id="base"))
    check(plain.status_code == 201, f"plain create {plain.status_code}")
    check(not isinstance(plain.parsed.envd_access_token, str), "no token unless secure")
    Sandbox.kill(plain.parsed.sandbox_id)

    step("kill, and the not-found answers")
    check(again.kill() is True, "kill")
    check(Sandbox.kill(sbx.sandbox_id) is False, "killing again finds nothing")
    check(not again.is_running(), "is_running after kill")
    try:
        again.commands.run("true")
        raise AssertionError("a command in a killed sandbox did not raise")
    except SandboxException as e:
        check("was not found" in str(e), f"the proxy's not found: {e}")
    try:
        Sandbox.connect(sbx.sandbox_id)
        raise AssertionError("connecting to a killed sandbox did not raise")
    except SandboxNotFoundException:
        pass
    try:
        Sandbox.get_info(sbx.sandbox_id)
        raise AssertionError("the info of a killed sandbox did not raise")
    except SandboxNotFoundException:
        pass
    check(v1.kill(), "kill the v1 sandbox")
    left = Sandbox.list(query=SandboxQuery(metadata={"suite": RUN})).next_items()
    check(left == [], f"nothing of this run is left: {left}")

    step("private previews: allow_public_traffic=False, then only the traffic token gets through")
    private = Sandbox.create(
        template="base",
        timeout=120,
        metadata={"suite": RUN + "-private"},
        network={"allow_public_traffic": False},
    )
    token = private.traffic_access_token
    check(token, "a private sandbox has a traffic access token")
    private.commands.run(
        "exec python3 -m http.server $PORT --bind 127.0.0.1",
        envs={"PORT": "8000"},
        background=True,
    )

    def private_get(token_header):
        headers = {"Host": private.get_host(8000)}
        if token_header is not None:
            headers["e2b-traffic-access-token"] = token_header
        return httpx.get(f"{SANDBOX_URL}/", headers=headers, timeout=5)

    missing = private_get(None)
    check(missing.status_code == 403, f"no token: {missing.status_code} {missing.text}")
    check(missing.json()["message"] == "missing traffic access token", missing.text)
    wrong = private_get("not-the-token")
    check(wrong.status_code == 403, f"a wrong token: {wrong.status_code}")
    check(wrong.json()["message"] == "invalid traffic access token", wrong.text)
    eventually("the private preview answers its token", lambda: private_get(token).status_code == 200)
    check(private.commands.run("echo envd").stdout == "envd\n", "envd is not behind the traffic token")
    check(again.traffic_access_token is None, "a public sandbox has no traffic token")
    check(private.kill(), "kill the private sandbox")


if __name__ == "__main__":
    print(f"e2b SDK {importlib.metadata.version('e2b')}", flush=True)
    try:
        main()
    except Exception:  # noqa: BLE001 - report the failed step and exit non-zero
        print(f"FAILED at step: {STEP[0]}", flush=True)
        traceback.print_exc()
        sys.exit(1)
    print("all steps passed", flush=True)
