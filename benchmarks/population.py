"""A synthetic, seeded population of East African patients, their visits and name searches.

Everything comes from one ``random.Random``, so a seed gives the same people, visits and
queries on every run. Names mix Swahili, Kenyan, Ugandan and Rwandan/Burundian names, some with
accents (French baptismal names are common in Rwanda and Burundi); searches are typed the way a
CHW types them: a first name, a full name, the start of a name, without accents or in capitals,
and names that no patient has.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta

# Birth dates count back from a fixed day, so that a seed always gives the same people.
REFERENCE_DAY = date(2025, 1, 1)

FEMALE_GIVEN = (
    "Amina", "Neema", "Rehema", "Zawadi", "Halima", "Mwanaisha", "Zuhura", "Upendo", "Furaha",
    "Imani", "Tumaini", "Rukia", "Mariamu", "Fatuma", "Saida", "Asha", "Subira", "Pendo",
    "Esther", "Grace", "Joyce", "Agnes", "Wanjiku", "Achieng", "Nafula", "Nakato", "Akinyi",
    "Atieno", "Wairimu", "Nyambura", "Uwase", "Béatrice", "Josée", "Aimée", "Hélène", "Émérita",
    "Clémentine", "Françoise", "Bénédicte",
)  # fmt: skip
MALE_GIVEN = (
    "Juma", "Baraka", "Hassan", "Khamisi", "Omari", "Rashidi", "Bakari", "Saidi", "Salim",
    "Mussa", "Daudi", "Yohana", "Petro", "Emmanuel", "Joseph", "Kamau", "Otieno", "Odhiambo",
    "Kiprono", "Kibet", "Mugisha", "Wasswa", "Kato", "Célestin", "Théogène", "Frédéric",
    "Dieudonné", "Anaclet", "Jérôme", "Valérien",
)  # fmt: skip
FAMILY = (
    "Mwakyusa", "Mushi", "Massawe", "Kimaro", "Swai", "Lyimo", "Mollel", "Laizer", "Mbwambo",
    "Kapinga", "Mwita", "Chacha", "Magesa", "Kiwelu", "Shirima", "Temba", "Mrema", "Ngowi",
    "Makame", "Haji", "Mohamed", "Ally", "Omondi", "Ochieng", "Wekesa", "Mutua", "Kiprotich",
    "Nakamya", "Ssempala", "Mukasa", "Okello", "Uwimana", "Mukamana", "Niyonzima", "Habimana",
    "Nshimiyimana", "Ingabire", "Hakizimana", "Ndayishimiye", "Nkurunziza", "Bizimana",
    "Ndikumana", "Nyirahabimana", "Sebarenzi",
)  # fmt: skip
# Real name words that no generated patient carries, nor starts a word with: searches for them
# find nobody, as a search for a patient registered on another tablet does.
ABSENT_NAMES = (
    "Wambui", "Chebet", "Njeri", "Barasa", "Tumusiime", "Nabwire", "Kiplagat", "Jepkosgei",
    "Muthoni", "Akello", "Nasimiyu", "Kyalo",
)  # fmt: skip
VILLAGES = (
    "Kijiji cha Mlima", "Mwembeni", "Majengo", "Kisiwani", "Mbuyuni", "Kibaoni", "Mnazi Mmoja",
    "Ilula", "Mafinga", "Ifakara", "Mlimba", "Kidatu", "Mang'ula", "Kiberege", "Mngeta",
    "Chita", "Idete", "Namawala", "Lupiro", "Mchombe", "Itete", "Igima", "Sonjo", "Signal",
)  # fmt: skip
# Mobile prefixes of Tanzania, Kenya, Uganda and Rwanda, in E.164 form.
PHONE_PREFIXES = ("+25571", "+25575", "+25576", "+25578", "+25472", "+25470", "+25677", "+25078")
NOTES = (
    "Advised to return in two weeks.",
    "Amepewa ushauri wa lishe.",
    "Reminded about the next antenatal contact.",
    "Anatumia dawa kama alivyoelekezwa.",
    "Referred to the health centre if fever persists.",
    "Mama ameelezwa dalili za hatari.",
)


@dataclass(frozen=True)
class Person:
    """A patient to register: demographics as the app receives them, and their age."""

    demographics: dict[str, str]
    age_years: int


@dataclass(frozen=True)
class Visit:
    """A visit as a CHW records it: the kind of encounter, vital-sign readings, maybe a note."""

    kind: str
    readings: dict[str, float]
    note: str | None


def people(rnd: random.Random, count: int) -> list[Person]:
    return [person(rnd) for _ in range(count)]


def person(rnd: random.Random) -> Person:
    sex = rnd.choice(("female", "male"))
    names = FEMALE_GIVEN if sex == "female" else MALE_GIVEN
    given = rnd.choice(names)
    if rnd.random() < 0.1:  # a second given name
        given = f"{given} {rnd.choice(names)}"
    age = _age(rnd)
    born = REFERENCE_DAY - timedelta(days=age * 365 + rnd.randrange(365))
    demographics = {
        "given": given,
        "family": rnd.choice(FAMILY),
        "sex": sex,
        "birth_date": born.isoformat(),
        "village": rnd.choice(VILLAGES),
    }
    if rnd.random() < 0.7:
        demographics["phone"] = rnd.choice(PHONE_PREFIXES) + f"{rnd.randrange(10**7):07d}"
    return Person(demographics, age)


def _age(rnd: random.Random) -> int:
    band = rnd.random()
    if band < 0.2:
        return rnd.randrange(0, 5)
    if band < 0.35:
        return rnd.randrange(5, 15)
    if band < 0.8:
        return rnd.randrange(15, 50)
    return rnd.randrange(50, 90)


def visit(rnd: random.Random, who: Person) -> Visit:
    """A plausible visit for ``who``: a sick-child check, an antenatal contact, a BP review."""
    note = rnd.choice(NOTES) if rnd.random() < 0.2 else None
    if who.age_years < 5:
        return Visit("sick_child", _child_readings(rnd, who.age_years), note)
    if who.age_years < 15:
        return Visit("vital_signs", _older_child_readings(rnd), note)
    pregnant_age = who.demographics["sex"] == "female" and who.age_years < 50
    if pregnant_age and rnd.random() < 0.3:
        return Visit("anc_contact", _adult_readings(rnd, hypertensive=False), note)
    if who.age_years >= 50:
        return Visit("hypertension_follow_up", _adult_readings(rnd, hypertensive=True), note)
    return Visit("vital_signs", _adult_readings(rnd, hypertensive=False), note)


def _child_readings(rnd: random.Random, age: int) -> dict[str, float]:
    return {
        "weight": round(3.2 + 2.8 * age + rnd.uniform(-1.0, 2.0), 1),
        "muac": float(rnd.randrange(110, 171)),
        "temperature": round(rnd.uniform(36.0, 39.5), 1),
        "respiratory_rate": float(rnd.randrange(24, 56)),
        "pulse": float(rnd.randrange(90, 151)),
    }


def _older_child_readings(rnd: random.Random) -> dict[str, float]:
    return {
        "weight": round(rnd.uniform(15.0, 50.0), 1),
        "temperature": round(rnd.uniform(36.0, 39.0), 1),
        "pulse": float(rnd.randrange(70, 121)),
        "respiratory_rate": float(rnd.randrange(16, 31)),
    }


def _adult_readings(rnd: random.Random, *, hypertensive: bool) -> dict[str, float]:
    systolic = rnd.randrange(120, 191) if hypertensive else rnd.randrange(95, 151)
    diastolic = min(rnd.randrange(60, 111), systolic - 25)
    readings = {
        "systolic": float(systolic),
        "diastolic": float(diastolic),
        "pulse": float(rnd.randrange(55, 111)),
        "temperature": round(rnd.uniform(36.0, 38.5), 1),
        "weight": round(rnd.uniform(42.0, 95.0), 1),
    }
    if hypertensive:
        readings["spo2"] = float(rnd.randrange(88, 101))
    return readings


def name_queries(rnd: random.Random, population: list[Person], count: int) -> list[str]:
    """Search texts as CHWs type them; about one in six finds nobody."""
    return [_query(rnd, rnd.choice(population).demographics) for _ in range(count)]


def _query(rnd: random.Random, who: dict[str, str]) -> str:
    first, family = who["given"].split()[0], who["family"]
    kind = rnd.random()
    if kind < 0.3:
        return first
    if kind < 0.55:
        return f"{first} {family}"
    if kind < 0.7:
        return family[: rnd.randrange(3, 5)]
    if kind < 0.85:  # typed without accents, in capitals, or with stray spaces
        return rnd.choice((_strip_accents(first).lower(), family.upper(), f"  {family}  {first}"))
    if kind < 0.92:
        return rnd.choice(ABSENT_NAMES)
    return f"{first} {rnd.choice(ABSENT_NAMES)}"


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))
