"""Part three of the demo: central and a hub wired to it, a visit reaching central as FHIR, and a
clinician's answer and advice coming back to the tablet. Central and the hub are reached through
their command lines and HTTP only."""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from field_app.demo.ports import free_port
from field_app.demo.reminders import LocalTwilio, central_settings, reminder_demo
from field_app.demo.tablets import (
    REGISTRATION,
    Script,
    anc_answers,
    answers_file,
    say,
)

REGION = "kilosa"
HUB_CLIENT = "hub-kilosa"
CONSOLE_CLIENT = "console"
FHIR_JSON = "application/fhir+json"
P384_BYTES = 48
WAIT_SECONDS = 20.0
START_SECONDS = 60.0  # the demo may share a busy machine


def central_demo(folder: Path, env: Mapping[str, str]) -> None:
    say("PART THREE: central, the national FHIR server, with the hub pushing to it.")
    folder.mkdir(parents=True)
    print(f"\n$ cd {folder}")
    central = Server("central", folder, env)
    hub = Server("sync_hub", folder, env)
    twilio = LocalTwilio(folder)
    try:
        say("A local Twilio for central's reminders (Twilio's REST API on this machine).")
        twilio.start(sms_url=f"{central.url}/sms/inbound")
        say("Central on a SQLite file (a national programme gives a postgresql:// URL instead).")
        central.configure(CENTRAL_DATABASE_URL="sqlite:///central.db", CENTRAL_BASE_URL=central.url)
        central.configure(**central_settings(twilio))
        central.start()
        say("The Kilosa hub makes its key for central; central's operator registers it.")
        hub.configure(
            SYNC_HUB_DB="hub.db", SYNC_HUB_CENTRAL_URL=central.url, SYNC_HUB_REGION=REGION,
            SYNC_HUB_CLIENT_ID=HUB_CLIENT, SYNC_HUB_CENTRAL_KEY="hub-central-key.pem",
            SYNC_HUB_FETCH_INTERVAL_SECONDS="1", SYNC_HUB_FACILITY="Kilosa Health Centre",
        )  # fmt: skip
        hub.cli("central-key", out="hub.jwk")
        central.cli("client", "add", "--id", HUB_CLIENT, "--region", REGION, "--jwk", "hub.jwk")
        say("The clinician console is a client of every region, with a key of its own.")
        console = Console(central.url, folder / "console.jwk")
        central.cli(
            "client", "add", "--id", CONSOLE_CLIENT, "--region", "*", "--jwk", "console.jwk"
        )
        hub.start()
        tablet = enrolled_tablet(hub)
        mother = visit_and_sync(tablet, folder)
        synced = time.monotonic()
        show_central(central, console, mother, synced)
        advise(console, folder, mother)
        receive_advice(hub, tablet, mother, console.newest)
        newest = reminder_demo(central, twilio, console, mother)
        receive_reply(hub, tablet, mother, newest)
        console.close()
    finally:
        hub.stop()
        central.stop()
        twilio.stop()


class Server:
    """A server of part three, ``python -m MODULE serve`` in the demo's folder, and its CLI."""

    def __init__(self, module: str, folder: Path, env: Mapping[str, str]) -> None:
        self.module = module
        self.folder = folder
        self.port = free_port()
        self.env = {k: v for k, v in env.items() if not k.startswith(("CENTRAL_", "SYNC_HUB_"))}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configure(self, **values: str) -> None:
        """Set its settings, printed as the ``export`` that sets them."""
        print("\n$ export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in values.items()))
        self.env.update(values)

    def start(self) -> None:
        print(f"\n$ python -m {self.module} serve --port {self.port} &")
        log = self.folder / f"{self.module}.log"
        with log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", self.module, "serve", "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                env=self.env,
            )
        print(f"  (its log goes to {log.name})")
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise SystemExit(f"{self.module} exited at start: see its log")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"{self.module} did not answer at {self.url}/health")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=15)
            self.process = None

    def cli(self, *argv: str, out: str = "", into: str = "", quiet: bool = False) -> str:
        """Run ``python -m MODULE ARGV`` in the folder, printing the command and what it
        wrote, except its output when that goes into the file ``out`` or the shell variable
        ``into``; returns its output."""
        shown = f"python -m {self.module} " + " ".join(shlex.quote(a) for a in argv)
        shown = f"{shown} > {out}" if out else f"{into}=$({shown})" if into else shown
        if not quiet:
            print(f"\n$ {shown}")
        done = subprocess.run(  # noqa: S603
            [sys.executable, "-m", self.module, *argv],
            capture_output=True,
            text=True,
            cwd=self.folder,
            env=self.env,
            check=False,
        )
        if out:
            (self.folder / out).write_text(done.stdout, encoding="utf-8")
        shown_lines = done.stderr + ("" if out or into else done.stdout)
        for line in [] if quiet else shown_lines.splitlines():
            print(f"  {line}")
        if done.returncode != 0:
            raise SystemExit(f"demo step failed (exit {done.returncode}): {shown}")
        return done.stdout


def enrolled_tablet(hub: Server) -> Script:
    code = hub.cli("enroll-code", "--chw", "amina", "--catchment", "Kilosa").split()[0]
    tablet = Script(hub.folder / "tablet-amina", "amina's tablet")
    tablet.env["FIELD_APP_PIN"] = "482913"
    tablet.run("init", "--user", "amina")
    tablet.run("enroll", "--hub", hub.url, "--code", code, "--label", "amina-tablet")
    return tablet


def receive_advice(hub: Server, tablet: Script, patient: str, newest: str) -> None:
    _wait_for_fetch(hub, newest)
    say("The hub fetched both into her chart (its fetch cursor has passed them).")
    hub.cli("fhir-status")
    say("Amina syncs: the referral is accepted, and the advice is in the chart on her tablet.")
    tablet.run("sync")
    tablet.run("patient", "show", patient)
    show_messages(tablet, patient)


def receive_reply(hub: Server, tablet: Script, patient: str, newest: str) -> None:
    _wait_for_fetch(hub, newest)
    say("The hub fetched the reminder's outcome and her reply into her chart.")
    say("Amina syncs: the reply is on her tablet, beside the clinician's advice.")
    tablet.run("sync")
    show_messages(tablet, patient)


def visit_and_sync(tablet: Script, folder: Path) -> str:
    say("Amina registers the mother of part one and records the same antenatal contact.")
    mother = tablet.run(
        "register", "--form", "patient_registration",
        "--answers", answers_file(folder / "tablet-amina", "registration", REGISTRATION),
    )  # fmt: skip
    tablet.run(
        "visit", "record", "--patient", mother, "--form", "anc_contact",
        "--answers", answers_file(folder / "tablet-amina", "anc", anc_answers(tablet)),
    )  # fmt: skip
    say("She syncs with the hub; the hub pushes the chart to central as FHIR R4.")
    tablet.run("sync")
    return mother


class Console:
    """The clinician console as a client of central: the public JWK it is registered with
    (SMART Backend Services: a P-384 key of its own), and FHIR over HTTP with a bearer token."""

    def __init__(self, central_url: str, jwk_path: Path) -> None:
        self.central_url = central_url
        numbers = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
        jwk = {
            "kty": "EC", "crv": "P-384", "kid": f"{CONSOLE_CLIENT}-demo", "use": "sig",
            "alg": "ES384", "x": _b64url(numbers.x.to_bytes(P384_BYTES, "big")),
            "y": _b64url(numbers.y.to_bytes(P384_BYTES, "big")),
        }  # fmt: skip
        jwk_path.write_text(json.dumps(jwk, indent=2), encoding="utf-8")
        self.http = httpx.Client(base_url=f"{central_url}/fhir", timeout=30)
        self.newest = ""  # lastUpdated of the newest resource the console wrote

    def use(self, token: str) -> None:
        self.http.headers["Authorization"] = f"Bearer {token}"

    def search(self, resource_type: str, patient: str) -> list[dict[str, Any]]:
        answer = self.http.get(resource_type, params={"patient": patient})
        answer.raise_for_status()
        return [e["resource"] for e in answer.json().get("entry", [])]

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(resource).encode()
        answer = self.http.post(
            resource["resourceType"], content=body, headers={"Content-Type": FHIR_JSON}
        )
        answer.raise_for_status()
        created: dict[str, Any] = answer.json()
        self.newest = max(self.newest, created["meta"]["lastUpdated"])
        return created

    def close(self) -> None:
        self.http.close()


def show_central(central: Server, console: Console, patient: str, synced: float) -> None:
    say("A bearer token for the console client, from the operator's command line.")
    console.use(central.cli("token", "--client", CONSOLE_CLIENT, into="TOKEN").strip())
    say("What central holds for her, as the clinician console reads it.")
    _wait_at_central(console, patient, synced)
    encounters = _curl(console, "Encounter", patient)
    for e in encounters:
        kind = e["type"][0]["coding"][0]["code"]
        print(f"  Encounter/{e['id']}  {kind}, {e['status']}, started {e['period']['start']}")
    for o in sorted(_curl(console, "Observation", patient), key=lambda o: _loinc(o)[0]):
        code, display = _loinc(o)
        print(f"  Observation LOINC {code} {display}: {_value(o)}")
    for r in _curl(console, "ServiceRequest", patient):
        reason = r["note"][0]["text"] if r.get("note") else ""
        print(f"  ServiceRequest/{r['id']}  priority {r['priority']}, {r['status']}: {reason}")
    counts = {kind: len(console.search(kind, patient)) for kind in ("QuestionnaireResponse",
              "Condition", "Task", "CommunicationRequest", "Consent")}  # fmt: skip
    print("  and " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))


def advise(console: Console, folder: Path, patient: str) -> None:
    say(
        "Dr. Mwakasege accepts the referral and advises Amina: two Communications written at"
        " central, which the hub fetches for its patients."
    )
    [referral] = console.search("ServiceRequest", patient)
    answer = _communication(patient, "referral-answer", "Accepted: the ward expects her today.")
    answer["basedOn"] = [{"reference": f"ServiceRequest/{referral['id']}"}]
    advice = _communication(
        patient, "advice", "Recheck her blood pressure in 4 hours if transport is delayed."
    )
    for name, resource in (("answer", answer), ("advice", advice)):
        path = folder / f"{name}.json"
        path.write_text(json.dumps(resource, indent=2, ensure_ascii=False), encoding="utf-8")
        print(
            f'\n$ curl -s -X POST -H "Authorization: Bearer $TOKEN" -H "Content-Type: {FHIR_JSON}"'
            f" --data @{path.name} {console.central_url}/fhir/Communication"
        )
        created = console.create(resource)
        print(
            f"  201 Created: Communication/{created['id']} version {created['meta']['versionId']}"
        )


def show_messages(tablet: Script, patient: str) -> None:
    chart = json.loads(tablet.run("patient", "show", patient, "--json", quiet=True))
    print("  (its messages:)")
    for message in chart.get("messages", []):
        print(
            f"  {message['direction']} via {message['channel']} from {message['author']}"
            f" at {message['sent_at']}: {message['text']}"
        )


def _communication(patient: str, category: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": "urn:rural-care:message", "code": category}]}],
        "subject": {"reference": f"Patient/{patient}"},
        "sent": datetime.now(UTC).isoformat(timespec="seconds"),
        "sender": {"display": "Dr. Mwakasege"},
        "payload": [{"contentString": text}],
    }


def _curl(console: Console, resource_type: str, patient: str) -> list[dict[str, Any]]:
    print(
        f'\n$ curl -s -H "Authorization: Bearer $TOKEN"'
        f" '{console.central_url}/fhir/{resource_type}?patient={patient}'"
    )
    found = console.search(resource_type, patient)
    print(f"  a searchset Bundle of {len(found)} {resource_type}:")
    return found


def _loinc(observation: dict[str, Any]) -> tuple[str, str]:
    coding = observation["code"]["coding"][0]
    return str(coding["code"]), str(coding.get("display", ""))


def _value(observation: dict[str, Any]) -> str:
    if "valueQuantity" in observation:
        quantity = observation["valueQuantity"]
        return f"{quantity['value']:g} {quantity.get('code', '')} (UCUM)"
    if "valueBoolean" in observation:
        return "yes" if observation["valueBoolean"] else "no"
    concept = observation.get("valueCodeableConcept", {})
    coding = (concept.get("coding") or [{}])[0]
    return str(coding.get("display") or coding.get("code") or concept.get("text", ""))


def _wait_at_central(console: Console, patient: str, synced: float) -> None:
    while len(console.search("Encounter", patient)) < 2:  # her registration and the visit
        if time.monotonic() - synced > WAIT_SECONDS:
            raise SystemExit("the visit did not reach central")
        time.sleep(0.2)
    print(f"  (her chart was at central {time.monotonic() - synced:.1f} s after the sync)")


def _wait_for_fetch(hub: Server, newest: str) -> None:
    """Wait until the hub's fetch cursor has passed what the console wrote."""
    started = time.monotonic()
    while True:
        status = hub.cli("fhir-status", quiet=True)
        cursor = next(
            line.split(" ", 1)[1] for line in status.splitlines() if line.startswith("cursor:")
        )
        if cursor != "none" and datetime.fromisoformat(cursor) >= datetime.fromisoformat(newest):
            return
        if time.monotonic() - started > WAIT_SECONDS:
            raise SystemExit("the hub did not fetch the clinician's messages")
        time.sleep(0.3)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
