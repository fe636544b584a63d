"""Two-way soak: random consent changes on both sides, both pipelines in turns.

    python benchmarks/two_way_soak.py [--changes 2000] [--rounds 20] [--people 100] [--seed 7]

A Salesforce sandbox (Leads) and the Didomi emulator start with every person opted in. Each
round makes ``changes / rounds`` random changes on a simulated clock (at least a second apart):
a rep flipping "Email Opt Out" or "Do Not Call" on a Lead in Salesforce, or the person making a
choice on the matching Didomi purpose (newsletter, phone). Then the pipelines run, through their
real CLIs: Salesforce → Didomi (tap-salesforce-consent | target-didomi), then Didomi →
Salesforce (tap-didomi | target-salesforce-consent), each with the state of its last run
(``--forward-first`` swaps them). Two quiet rounds (no change) end the soak.

Measured:

* echo events: changes the pipelines made themselves read back as somebody's change (consent
  changes by the integration user), and events or writes in the second quiet round (the first
  may still carry the last changes across);
* re-subscriptions by an older choice: a pipeline write that opts a person in while the newest
  choice made so far, on either side, is an opt-out; and all writes that disagree with it;
* final agreement: per person and purpose, both systems hold the newest choice from either side.

Prints a JSON summary (the figures of docs/two-way.md).
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from salesforce_sandbox import Sandbox
from tap_didomi.emulator import DidomiEmulator

# Salesforce opt-out field -> Didomi purpose (the field is the purpose's choice inverted).
FIELDS = {"HasOptedOutOfEmail": "newsletter", "DoNotCall": "phone"}
MAPPINGS = [{"id": f, "value": f"purposes.{p}.enabled", "invert": True} for f, p in FIELDS.items()]


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Soak:
    sb: Sandbox
    emu: DidomiEmulator
    workdir: Path
    lead_ids: dict[str, str]  # ouid -> Lead Id
    truth: dict[tuple[str, str], bool] = field(default_factory=dict)  # (ouid, purpose) -> enabled
    counts: Counter[str] = field(default_factory=Counter)
    states: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    runs: int = 0
    log: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # the choices made

    # -- the two systems as (ouid, purpose) -> enabled ---------------------------------------

    def salesforce(self) -> dict[tuple[str, str], bool]:
        held = {}
        for lead in self.sb.records("Lead"):
            for name, purpose in FIELDS.items():
                held[(lead["Email"], purpose)] = not lead[name]
        return held

    def didomi(self) -> dict[tuple[str, str], bool]:
        held = {}
        for user in self.emu.users():
            for item in user["consents"]["purposes"]:
                if item.get("enabled") is not None:
                    held[(user["organization_user_id"], item["id"])] = item["enabled"]
        return held

    def judge(self, before: dict[tuple[str, str], bool], after: dict[tuple[str, str], bool],
              side: str) -> None:
        """Count the writes a run made that disagree with the newest choice made so far."""
        for key, value in after.items():
            if before.get(key) == value:
                continue
            self.counts[f"{side}_writes"] += 1
            if value != self.truth[key]:
                self.counts[f"{side}_writes_against_newest"] += 1
                if value:
                    self.counts["resubscriptions_by_older_choice"] += 1

    # -- the pipelines ------------------------------------------------------------------------

    def _cli(self, module: str, settings: dict[str, Any], stdin: str = "",
             state: dict[str, Any] | None = None) -> str:
        self.runs += 1
        config = self.workdir / f"{self.runs}-{module}.json"
        config.write_text(json.dumps(settings))
        command = [sys.executable, "-m", module, "--config", str(config)]
        if state is not None:
            state_path = self.workdir / f"{self.runs}-state.json"
            state_path.write_text(json.dumps(state))
            command += ["--state", str(state_path)]
        proc = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"{module} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return proc.stdout

    def _report(self, name: str) -> Path:
        return self.workdir / f"{self.runs + 1}-{name}.jsonl"

    def backward(self) -> None:
        """Salesforce → Didomi."""
        salesforce = {"instance_url": self.sb.url, "client_id": self.sb.client_id,
                      "client_secret": self.sb.client_secret, "salesforce_object": "Lead",
                      "mappings": MAPPINGS}
        changes = self._cli("tap_salesforce_consent", salesforce,
                            state=self.states.get("backward"))
        for line in changes.splitlines():
            message = json.loads(line)
            if message.get("type") == "RECORD":
                self.counts["consent_changes_read"] += 1
                if message["record"]["changed_by_id"] == self.sb.integration_user_id:
                    self.counts["echo_changes_read"] += 1
        before = self.didomi()
        report = self._report("target-didomi")
        out = self._cli("target_didomi", {
            "api_url": self.emu.url, "api_key": self.emu.api_key,
            "api_secret": self.emu.api_secret, "organization_id": self.emu.organization_id,
            "mappings": MAPPINGS, "report_path": str(report)}, changes)
        self._keep_state("backward", out)
        for line in report.read_text().splitlines():
            self.counts["target-didomi:" + json.loads(line)["outcome"]] += 1
        self.judge(before, self.didomi(), "didomi")

    def forward(self) -> None:
        """Didomi → Salesforce."""
        users = self._cli("tap_didomi", {
            "api_url": self.emu.url, "api_key": self.emu.api_key,
            "api_secret": self.emu.api_secret, "organization_id": self.emu.organization_id},
            state=self.states.get("forward"))
        before = self.salesforce()
        report = self._report("target-salesforce-consent")
        out = self._cli("target_salesforce_consent", {
            "instance_url": self.sb.url, "client_id": self.sb.client_id,
            "client_secret": self.sb.client_secret, "salesforce_object": "Lead",
            "mappings": MAPPINGS, "report_path": str(report)}, users)
        self._keep_state("forward", out)
        for line in report.read_text().splitlines():
            self.counts["target-salesforce-consent:" + json.loads(line)["outcome"]] += 1
        self.judge(before, self.salesforce(), "salesforce")

    def _keep_state(self, pipeline: str, target_stdout: str) -> None:
        lines = [line for line in target_stdout.splitlines() if line.startswith("{")]
        if lines:
            self.states[pipeline] = json.loads(lines[-1])


def run(changes: int, rounds: int, people: int, seed: int,
        forward_first: bool = False) -> dict[str, Any]:
    rng = random.Random(seed)
    ouids = [f"person{i}@example.com" for i in range(people)]
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=2)
    sandbox_seed = {"objects": {"Lead": {"records": [
        {"LastName": f"Person {i}", "Company": "Acme", "Email": ouid,
         "HasOptedOutOfEmail": False, "DoNotCall": False} for i, ouid in enumerate(ouids)]}}}
    users = [{"id": f"user-{i}", "organization_id": "acme-corp", "organization_user_id": ouid,
              "version": 1, "created_at": _iso(start), "updated_at": _iso(start),
              "consents": {"purposes": [{"id": p, "enabled": True} for p in FIELDS.values()],
                           "vendors": {"enabled": [], "disabled": []}}}
             for i, ouid in enumerate(ouids)]
    clock = start
    with tempfile.TemporaryDirectory() as tmp, Sandbox(seed=sandbox_seed) as sb, \
            DidomiEmulator(users=users) as emu:
        soak = Soak(sb, emu, Path(tmp), {r["Email"]: r["Id"] for r in sb.records("Lead")})
        soak.truth = {(o, p): True for o in ouids for p in FIELDS.values()}
        reps = [u["Id"] for u in sb.people()]
        made: Counter[str] = Counter()
        began = time.monotonic()
        per_round = changes // rounds
        for round_number in range(rounds + 2):
            quiet = round_number >= rounds
            for _ in range(0 if quiet else per_round):
                clock += timedelta(seconds=rng.randint(1, 5))
                ouid, name = rng.choice(ouids), rng.choice(list(FIELDS))
                purpose = FIELDS[name]
                if rng.random() < 0.5:  # a rep flips the field in Salesforce
                    lead = sb.record("Lead", soak.lead_ids[ouid])
                    sb.update_as(rng.choice(reps), "Lead", lead["Id"],
                                 {name: not lead[name]}, at=_iso(clock))
                    soak.truth[(ouid, purpose)] = lead[name]  # opted out -> back in, and so on
                    soak.log.setdefault((ouid, purpose), []).append(
                        f"r{round_number} salesforce {_iso(clock)} {lead[name]}")
                    made["salesforce"] += 1
                else:  # the person chooses in Didomi
                    enabled = rng.random() < 0.5
                    stamp = clock + timedelta(milliseconds=rng.randint(0, 999))
                    emu.clock = functools.partial(_iso, stamp)
                    emu.add_events([{"created_at": _iso(stamp),
                                     "user": {"organization_user_id": ouid},
                                     "consents": {"purposes": [{"id": purpose,
                                                                "enabled": enabled}]}}])
                    soak.truth[(ouid, purpose)] = enabled
                    soak.log.setdefault((ouid, purpose), []).append(
                        f"r{round_number} didomi {_iso(stamp)} {enabled}")
                    made["didomi"] += 1
            clock += timedelta(seconds=1)
            emu.clock = functools.partial(_iso, clock)
            # The first quiet round may still carry the last busy round's changes across; in
            # the second, nothing is left to carry: any event or write there is an echo.
            settled = round_number == rounds + 1
            sent_before = soak.counts["target-didomi:sent"]
            writes_before = soak.counts["salesforce_writes"] + soak.counts["didomi_writes"]
            if forward_first:
                soak.forward()
                soak.backward()
            else:
                soak.backward()
                soak.forward()
            if settled:
                soak.counts["echo_settled_round_events"] += \
                    soak.counts["target-didomi:sent"] - sent_before
                soak.counts["echo_settled_round_writes"] += \
                    soak.counts["salesforce_writes"] + soak.counts["didomi_writes"] - writes_before
        seconds = time.monotonic() - began
        salesforce, didomi = soak.salesforce(), soak.didomi()
        disagree = [k for k, v in soak.truth.items() if salesforce[k] != v or didomi.get(k) != v]
        echo = (soak.counts["echo_changes_read"] + soak.counts["echo_settled_round_events"]
                + soak.counts["echo_settled_round_writes"])
        return {
            "changes": dict(made), "rounds": rounds, "people": people, "seed": seed,
            "order": "forward first" if forward_first else "backward first",
            "pairs": len(soak.truth),
            "echo_events": echo,
            "resubscriptions_by_older_choice": soak.counts["resubscriptions_by_older_choice"],
            "writes_against_newest": soak.counts["didomi_writes_against_newest"]
            + soak.counts["salesforce_writes_against_newest"],
            "final_disagreements": len(disagree),
            "final_agreement": not disagree,
            "disagreements": [
                {"person": k[0], "purpose": k[1], "newest": soak.truth[k],
                 "salesforce": salesforce[k], "didomi": didomi.get(k),
                 "history": soak.log.get(k, [])} for k in disagree[:5]],
            "counts": dict(sorted(soak.counts.items())),
            "events_in_didomi": len(emu.events),
            "wall_seconds": round(seconds, 1),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--people", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--forward-first", action="store_true",
                        help="run Didomi → Salesforce before Salesforce → Didomi in each round")
    args = parser.parse_args(argv)
    summary = run(args.changes, args.rounds, args.people, args.seed, args.forward_first)
    print(json.dumps(summary, indent=2))
    ok = (summary["echo_events"] == 0 and summary["resubscriptions_by_older_choice"] == 0
          and summary["final_agreement"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
