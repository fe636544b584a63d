"""The console script's start-up messages."""

from __future__ import annotations

import socket
import subprocess
import sys


def test_a_port_in_use_is_one_line_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "salesforce_sandbox", "--port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"salesforce-sandbox: cannot listen on 127.0.0.1:{port} (Address already in use): "
        "choose another --port (0: any free port)"
    ]
