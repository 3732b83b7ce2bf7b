"""A demo homeserver: Synapse on SQLite at 127.0.0.1 with synapse-syncv3 loaded, two
demo users in a shared room, and ready-to-paste curl commands.

Run it through ./demo (which installs what it needs). Ctrl-C stops Synapse.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import time
from pathlib import Path
from types import FrameType

from harness.client import MatrixUser, quote
from harness.homeserver import REPO_ROOT, Homeserver


def curl(method: str, url: str, token: str, body: str) -> str:
    return (
        f"curl -sS -X {method} -H {shlex.quote('Authorization: Bearer ' + token)} "
        f"{shlex.quote(url)} -d {shlex.quote(body)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=18338, help="HTTP port on 127.0.0.1")
    parser.add_argument(
        "--dir", type=Path, default=REPO_ROOT / "demo-data", help="data directory (recreated)"
    )
    args = parser.parse_args()

    shutil.rmtree(args.dir, ignore_errors=True)
    hs = Homeserver(args.dir, database="sqlite", port=args.port, name="demo")
    print(f"Starting Synapse with synapse-syncv3 on http://127.0.0.1:{args.port} ...", flush=True)
    hs.start()
    try:
        alice = MatrixUser(hs.base_url, hs.register(localpart="alice", password="alice"))
        bob = MatrixUser(hs.base_url, hs.register(localpart="bob", password="bob"))
        room = alice.create_room(name="demo", invite=[bob.user_id])
        bob.join(room)
        first = alice.sync_v3({"typing": {"room_id": room}, "to_device": {}}).expect(200)
        since = first["next"]
        sync = f"{hs.base_url}/_matrix/client/v3/sync"
        typing = f"{hs.base_url}/_matrix/client/v3/rooms/{quote(room)}/typing/{quote(bob.user_id)}"
        to_device = f"{hs.base_url}/_matrix/client/v3/sendToDevice/m.demo/{int(time.time())}"
        assert alice.access_token and bob.access_token
        print(
            f"""
Synapse {hs.base_url} (pid {hs.pid}, log {hs.log_path})
Users: {alice.user_id} (password alice, device {alice.device_id})
       {bob.user_id} (password bob); room {room} ("demo") with both.

Alice's sync v3 session tracks typing in the room and her to-device messages.
Long-poll it (waits up to 30 s; returns {{"next": ...}} if nothing happens):

{curl("POST", sync + "?timeout=30000&since=" + since, alice.access_token, "{}")}

Then, in another terminal, make Bob type, or send Alice a to-device message:

{curl("PUT", typing, bob.access_token, '{"typing": true, "timeout": 30000}')}
{
                curl(
                    "PUT",
                    to_device,
                    bob.access_token,
                    '{"messages": {"'
                    + alice.user_id
                    + '": {"'
                    + str(alice.device_id)
                    + '": {"hello": "alice"}}}}',
                )
            }

Continue with the "next" token of each response as since. Start a new session
(a new token) by leaving since out:

{curl("POST", sync, alice.access_token, '{"typing": {"room_id": "' + room + '"}, "to_device": {}}')}

Press Ctrl-C to stop Synapse.""",
            flush=True,
        )

        def stop(_signum: int, _frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        while hs.running:
            time.sleep(0.5)
        print("Synapse exited; see", hs.log_path)
    except KeyboardInterrupt:
        pass
    finally:
        hs.stop()
        print("Synapse stopped.")


if __name__ == "__main__":
    main()
