"""Command-line helpers every plugin of the consent pipeline uses.

The `--config` file check, the `--about` text, the progress line, the unknown-setting hint and
the one-line failure exit: each plugin's console entry point and Singer class import these, so
that a message reads the same in every plugin and is fixed in one place.
"""

from __future__ import annotations

import difflib
import json
import logging
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

if TYPE_CHECKING:
    from singer_sdk.about import AboutInfo

# Seconds between two progress lines; tests set 0 (a line for every record).
PROGRESS_INTERVAL_VARIABLE = "CONSENT_PROGRESS_INTERVAL"
DEFAULT_PROGRESS_INTERVAL = 10.0


def config_file_problem(argv: list[str], example: str = '{"name": "value"}') -> str | None:
    """What is wrong with a `--config` file of the command line, before the SDK reads it.

    `example` is a JSON object of the plugin's settings, shown when the file holds another
    JSON value.
    """
    paths = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--config"]
    paths += [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    for path in paths:
        if path == "ENV":
            continue
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return (f"the config file {path} does not exist: give the path of a JSON file of "
                    "settings (`--about` lists them)")
        except (OSError, UnicodeDecodeError) as exc:
            return f"the config file {path} cannot be read ({exc})"
        try:
            settings = json.loads(text)
        except ValueError as exc:
            where = (f" at line {exc.lineno}, column {exc.colno}"
                     if isinstance(exc, json.JSONDecodeError) else "")
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            return f"the config file {path} is not valid JSON ({reason}{where}): fix it"
        if not isinstance(settings, dict):
            return (f"the config file {path} holds a JSON {type(settings).__name__}: it must "
                    f"be an object of settings, e.g. {example}")
    return None


def about_text(info: AboutInfo, *, show_required: bool = True) -> str:
    """`--about` as text: every setting with its description, default and variable.

    `show_required`: mark each setting required or optional (a tap whose settings are all
    optional or chosen among leaves it out).
    """
    lines = [f"{info.name} {info.version}: {info.description}", "", "Settings:"]
    required = set(info.settings.get("required", []))
    for name, schema in info.settings.get("properties", {}).items():
        facts = ["required" if name in required else "optional"] if show_required else []
        if schema.get("default") is not None:
            facts.append(f"default {json.dumps(schema['default'])}")
        if schema.get("secret"):
            facts.append("secret")
        facts.append(info.env_var_prefix + name.upper().replace("-", "_"))
        lines.append(f"  {name} ({', '.join(facts)})")
        description = schema.get("description") or ""
        lines += textwrap.wrap(description, 96, initial_indent="      ",
                               subsequent_indent="      ", break_on_hyphens=False)
    lines += ["", "Capabilities: " + ", ".join(str(c) for c in info.capabilities)]
    return "\n".join(lines)


class TextAbout:
    """`--about` as :func:`about_text`, the other formats as the Singer SDK prints them.

    Mixed in before the SDK's Tap or Target class: ``class TapX(TextAbout, Tap)``.
    """

    #: Whether the text marks each setting required or optional (see :func:`about_text`).
    about_shows_required: ClassVar[bool] = True

    @classmethod
    def print_about(cls, output_format: str | None = None) -> None:
        if output_format not in (None, "text"):
            super().print_about(output_format)  # type: ignore[misc]
            return
        plugin: Any = cls  # a Singer SDK plugin class (see the class docstring)
        print(about_text(plugin._get_about_info(), show_required=cls.about_shows_required))


def progress_interval(env: Mapping[str, str], logger: logging.Logger) -> float:
    """Seconds between progress lines: CONSENT_PROGRESS_INTERVAL, else 10."""
    raw = env.get(PROGRESS_INTERVAL_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_PROGRESS_INTERVAL
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also refuses nan
        logger.warning("%s=%r is not a number of seconds; progress is logged every 10 s",
                       PROGRESS_INTERVAL_VARIABLE, raw)
        return DEFAULT_PROGRESS_INTERVAL
    return seconds


class ProgressLog:
    """A line at most every `interval` seconds: records read (per stream) and the rate.

    A plugin that knows more (outcomes so far) overrides `details`.
    """

    def __init__(self, logger: logging.Logger, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.read: Counter[str] = Counter()
        self.started = clock()
        self.next_line = self.started + interval

    def record_read(self, stream: str = "") -> None:
        self.read[stream] += 1
        now = self.clock()
        if now >= self.next_line:
            self.next_line = now + self.interval
            self.logger.info("%s", self.line(now))

    @property
    def total(self) -> int:
        return sum(self.read.values())

    def details(self) -> str:
        """What follows the count of records read: here the count per stream."""
        streams = " ".join(f"{name}={count}" for name, count in sorted(self.read.items()))
        return f" ({streams})"

    def line(self, now: float) -> str:
        rate = self.total / (now - self.started) if now > self.started else 0.0
        return f"Progress: {self.total} record(s) read{self.details()}, {rate:.1f} records/s"


def nearest_name(name: str, known: Iterable[str]) -> str | None:
    """The known name nearest `name` (a misspelt setting's likely meaning), or None."""
    nearest = difflib.get_close_matches(str(name), sorted(known), n=1, cutoff=0.6)
    return nearest[0] if nearest else None


def unknown_setting_problems(config: Iterable[str], known: Iterable[str],
                             plugin: str) -> list[str]:
    """A problem per setting of `config` that is not `known`, naming the nearest known one.

    A setting a plugin does not know is never ignored: a misspelt `dry_run` would write for real.
    """
    names = set(known)
    problems = []
    for name in sorted(str(key) for key in config):
        if name in names:
            continue
        nearest = nearest_name(name, names)
        hint = f"did you mean {nearest}?" if nearest else f"{plugin} --about lists the settings."
        problems.append(f"unknown setting {name}: {hint} A setting {plugin} does not know would "
                        "be ignored; rename or remove it")
    return problems


def fail(name: str, message: str, status: int, logger: logging.Logger | None = None) -> NoReturn:
    """Exit with `status` after one line `<name>: <message>`.

    With a logger the line is logged at error level (so that Meltano shows it at
    `--log-level=warning` too); without one it is written to stderr as it is.
    """
    if logger is not None:
        logger.error("%s: %s", name, message)
    else:
        sys.stderr.write(f"{name}: {message}\n")
    sys.exit(status)
