"""The test helpers: Meltano's structured logging as a file, and its JSON lines read back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from consent_pipelines_common.testing import about_text_gaps, json_lines, structured_logging


def test_structured_logging_makes_a_plugin_log_json_lines(tmp_path: Path) -> None:
    env = structured_logging(tmp_path, level="INFO")
    config = json.loads(Path(env["SINGER_SDK_LOG_CONFIG"]).read_text())
    code = ("import json, logging.config, os, sys\n"
            "logging.config.dictConfig(json.load(open(os.environ['SINGER_SDK_LOG_CONFIG'])))\n"
            "logging.getLogger('tap-example').info('read %d records', 3)\n"
            "print('not json', file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], env={**env, "PATH": ""},
                          capture_output=True, text=True, timeout=60, check=True)
    assert config["root"]["level"] == "INFO"
    (line,) = json_lines(proc.stderr)
    assert line["level"] == "info" and line["message"] == "read 3 records"
    assert "not json" in proc.stderr


def test_about_text_gaps_names_each_setting_the_text_leaves_out() -> None:
    about = json.dumps({"settings": {"properties": {
        "token": {"description": "The API   token."},
        "page_size": {"description": "Records per page."},
        "region": {},
    }}})
    text = ("tap 1.0\nSettings:\n  token (secret)\n      The API\n      token.\n"
            "  region (optional)\n")
    assert about_text_gaps(about, text) == ["page_size"]
    assert about_text_gaps(about, text + "  page_size (optional)\n      Records per page.\n") == []
