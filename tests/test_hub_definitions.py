"""The Meltano Hub definitions in `plugins/` say what each plugin's `--about` says.

`meltano add --plugin-type loader target-salesforce-consent --from-ref plugins/loaders/...yml`
(and the same for the extractor) copies a definition into a project, so every setting the
plugin reads must be there, with the kind Meltano parses it as, its description, default and
options, and `sensitive: true` exactly for secrets (Meltano then keeps it out of meltano.yml
and masks it).

After changing a plugin's settings, regenerate the settings part of its definition with
`python -c 'from tests.test_hub_definitions import regenerate; regenerate()'` (the hand-written
fields such as label, description, pip_url and settings_group_validation are kept).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "plugins"
# The repository the distributions are published from; every URL in a definition starts here.
REPOSITORY = "https://github.com/consent-pipelines/target-salesforce-consent"


@dataclass(frozen=True)
class Plugin:
    name: str
    plugin_type: str  # Meltano's: "loaders" / "extractors"
    variant: str
    project: Path  # the distribution's folder (its pyproject.toml)

    @property
    def definition_path(self) -> Path:
        return PLUGINS / self.plugin_type / f"{self.name}--{self.variant}.yml"

    @property
    def namespace(self) -> str:
        return self.name.replace("-", "_")


TARGET = Plugin("target-salesforce-consent", "loaders", "consent-pipelines", ROOT)
TAP = Plugin("tap-didomi", "extractors", "consent-pipelines", ROOT / "tap-didomi")
TAP_SF = Plugin(
    "tap-salesforce-consent", "extractors", "consent-pipelines", ROOT / "tap-salesforce-consent"
)
TARGET_DIDOMI = Plugin("target-didomi", "loaders", "consent-pipelines", ROOT / "target-didomi")
PLUGIN_LIST = [TARGET, TAP, TAP_SF, TARGET_DIDOMI]


def executable(name: str) -> Path:
    """The plugin's console script next to this Python (the test command installs both)."""
    return Path(sys.executable).parent / name


def about(plugin: Plugin) -> dict[str, Any]:
    exe = executable(plugin.name)
    assert exe.exists(), (
        f"{exe} is missing: install {plugin.project.relative_to(ROOT) or '.'} into this "
        "environment (python3 scripts/test.py does)"
    )
    proc = subprocess.run(
        [str(exe), "--about", "--format=json"], capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def load(plugin: Plugin) -> dict[str, Any]:
    data = yaml.safe_load(plugin.definition_path.read_text())
    assert isinstance(data, dict), plugin.definition_path
    return data


def _types(schema: dict[str, Any]) -> list[str]:
    """The JSON types a setting's schema allows, `null` aside."""
    found: list[str] = []
    declared = schema.get("type")
    if isinstance(declared, str):
        found.append(declared)
    elif isinstance(declared, list):
        found.extend(t for t in declared if isinstance(t, str))
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key, []):
            if isinstance(sub, dict):
                found.extend(_types(sub))
    return [t for t in dict.fromkeys(found) if t != "null"]


def setting_kind(schema: dict[str, Any]) -> str:
    """The Meltano setting kind for a JSON schema, as Meltano Hub's SDK tooling derives it.

    Secrets are `kind: string` with `sensitive: true` (Meltano's replacement for the
    deprecated `kind: password`).
    """
    types = _types(schema)
    if len(types) != 1:
        return "string" if not types else "object"  # a mix: Meltano passes JSON through
    kind = types[0]
    if kind == "string":
        if schema.get("enum"):
            return "options"
        if schema.get("format") in ("date-time", "date"):
            return "date_iso8601"
        return "string"
    return {"number": "decimal"}.get(kind, kind)


def _label(name: str, schema: dict[str, Any]) -> str:
    title = schema.get("title")
    return str(title) if title else name.replace("_", " ").title()


def expected_setting(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    setting: dict[str, Any] = {
        "name": name,
        "label": _label(name, schema),
        "kind": setting_kind(schema),
    }
    if schema.get("description"):
        setting["description"] = schema["description"]
    if schema.get("default") is not None:
        setting["value"] = schema["default"]
    if setting["kind"] == "options":
        setting["options"] = [{"label": str(v), "value": v} for v in schema["enum"]]
    if schema.get("secret"):
        setting["sensitive"] = True
    return setting


def expected_settings(about_json: dict[str, Any]) -> list[dict[str, Any]]:
    properties: dict[str, Any] = about_json["settings"]["properties"]
    return [expected_setting(name, schema) for name, schema in properties.items()]


@pytest.fixture(scope="module", params=PLUGIN_LIST, ids=[p.name for p in PLUGIN_LIST])
def plugin(request: pytest.FixtureRequest) -> Plugin:
    value: Plugin = request.param
    return value


@pytest.fixture(scope="module")
def plugin_about(plugin: Plugin) -> dict[str, Any]:
    return about(plugin)


def test_identity(plugin: Plugin, plugin_about: dict[str, Any]) -> None:
    d = load(plugin)
    assert d["name"] == plugin_about["name"] == plugin.name
    assert d["variant"] == plugin.variant
    assert d["namespace"] == plugin.namespace
    assert d["executable"] == plugin.name
    assert d["pip_url"] == plugin.name  # the distribution's name on PyPI
    assert d["description"], "Hub lists plugins by their description"
    assert d["label"]
    assert "meltano_sdk" in d["keywords"]
    for key in ("repo", "docs"):
        if key in d:
            assert d[key].startswith(REPOSITORY), (key, d[key])


def test_capabilities_match_about(plugin: Plugin, plugin_about: dict[str, Any]) -> None:
    assert sorted(load(plugin)["capabilities"]) == sorted(plugin_about["capabilities"])


def test_settings_match_about(plugin: Plugin, plugin_about: dict[str, Any]) -> None:
    settings = load(plugin)["settings"]
    names = [s["name"] for s in settings]
    assert len(names) == len(set(names)), "a setting is defined twice"
    want = {s["name"]: s for s in expected_settings(plugin_about)}
    assert set(names) == set(want), (
        f"missing: {sorted(set(want) - set(names))}, unknown: {sorted(set(names) - set(want))}"
    )
    for got in settings:
        expected = dict(want[got["name"]])
        if plugin is TARGET and got["name"] == "mappings":
            # The definition's example mappings, for the sample data (the loader has no
            # default): mappings of the demo's project, which the sample run proves.
            demo = yaml.safe_load((ROOT / "meltano.yml").read_text())["plugins"]["loaders"]
            demo_mappings = demo[0]["config"]["mappings"]
            assert got["value"] and all(m in demo_mappings for m in got["value"]), got["value"]
            got = {k: v for k, v in got.items() if k != "value"}
        if "options" in expected:  # option labels are free text; the values are the enum
            options = expected.pop("options")
            assert [o["value"] for o in got["options"]] == [o["value"] for o in options]
            assert all(isinstance(o["label"], str) and o["label"] for o in got["options"])
            got = {k: v for k, v in got.items() if k != "options"}
        assert got == expected, got["name"]
    secrets = {n for n, s in plugin_about["settings"]["properties"].items() if s.get("secret")}
    assert {s["name"] for s in settings if s.get("sensitive")} == secrets


def test_settings_group_validation(plugin: Plugin, plugin_about: dict[str, Any]) -> None:
    """Each group is one complete way to configure the plugin; Meltano accepts any of them."""
    groups = load(plugin)["settings_group_validation"]
    properties = plugin_about["settings"]["properties"]
    required = set(plugin_about["settings"].get("required", []))
    assert groups and all(groups), "at least one non-empty group"
    for group in groups:
        assert set(group) <= set(properties), group
        assert required <= set(group), (group, required)
    if plugin is TARGET:
        assert [sorted(g) for g in groups] == [sorted(required)]


def test_definitions_are_the_only_files() -> None:
    """No stray or misnamed definition: one per plugin, named `<name>--<variant>.yml`."""
    found = sorted(p.relative_to(PLUGINS).as_posix() for p in PLUGINS.rglob("*") if p.is_file())
    assert found == sorted(p.definition_path.relative_to(PLUGINS).as_posix() for p in PLUGIN_LIST)


def regenerate() -> None:
    """Rewrite the generated part (capabilities, settings) of every definition from --about."""
    for p in PLUGIN_LIST:
        if not (p.project / "pyproject.toml").exists():
            continue
        info = about(p)
        data = load(p) if p.definition_path.exists() else {}
        # Example values written by hand (the loader's example mappings) are kept.
        examples = {s["name"]: s["value"] for s in data.get("settings", [])
                    if s["name"] == "mappings" and "value" in s}
        data["capabilities"] = sorted(info["capabilities"])
        data["settings"] = [{**s, **({"value": examples[s["name"]]} if s["name"] in examples
                                     else {})} for s in expected_settings(info)]
        p.definition_path.parent.mkdir(parents=True, exist_ok=True)
        p.definition_path.write_text(
            yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
        )


def test_readme_adds_the_forward_plugins_from_their_definitions() -> None:
    # The way back's plugins are added in docs/two-way.md.
    readme = (ROOT / "README.md").read_text()
    for p in (TARGET, TAP):
        kind = p.plugin_type.rstrip("s")
        definition = p.definition_path.relative_to(ROOT)
        line = f'meltano add --plugin-type {kind} {p.name} --from-ref "$REPO/{definition}"'
        assert line in readme, line
