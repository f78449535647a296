"""PII detectors on postal, phone and name forms written the way people write them.

Each case is a realistic sentence; positives say which value must be found (whole), negatives
which values must not be. Checked against the formats' published rules (postcode shapes per
country, ITU-T E.164 / national numbering plans, US military mail), not against one corpus.
"""

from __future__ import annotations

import pytest

from opengemma.safety.pii import Scanner
from opengemma.safety.pii_address import postcode_ok
from opengemma.safety.pii_names import has_common_word


@pytest.fixture(scope="module")
def rules():
    return Scanner(strict=True)


def values(scanner, text, type_):
    return [text[f.start : f.end] for f in scanner.scan([text])[0] if f.type == type_]


# ------------------------------------------------------------------------ addresses


@pytest.mark.parametrize(
    "text, address",
    [
        # PT: NNNN-NNN before the city is a postcode, not a phone
        (
            "Envie para Rua de Santa Catarina 112, 4000-442 Porto, Portugal.",
            "Rua de Santa Catarina 112, 4000-442 Porto",
        ),
        ("Rua Augusta, 27 - 1100-048 Lisboa", "Rua Augusta, 27 - 1100-048 Lisboa"),
        (
            "A sede fica na Avenida da República n.º 50, 2.º Esq., 1050-196 Lisboa.",
            "Avenida da República n.º 50, 2.º Esq., 1050-196 Lisboa",
        ),
        # BR: CEP with its label, city/state with a slash
        (
            "Endereço: Av. Paulista, 1578, Bela Vista, São Paulo/SP, CEP 01310-200",
            "Av. Paulista, 1578, Bela Vista, São Paulo/SP, CEP 01310-200",
        ),
        # US military, comma and space forms
        ("Alternate: Unit 2050 Box 4190, DPO AP 96522.", "Unit 2050 Box 4190, DPO AP 96522"),
        ("PSC 1234, Box 5678, APO AE 09012", "PSC 1234, Box 5678, APO AE 09012"),
        ("CMR 480 Box 1234\nAPO AE 09128", "CMR 480 Box 1234\nAPO AE 09128"),
        # US with a directional after the street type; PO boxes
        (
            "Send it to 1600 Pennsylvania Avenue NW, Washington, DC 20500.",
            "1600 Pennsylvania Avenue NW, Washington, DC 20500",
        ),
        ("Mail: PO Box 123, Anytown, CA 94105", "PO Box 123, Anytown, CA 94105"),
        ("Postbus 1234, 3500 AB Utrecht", "Postbus 1234, 3500 AB Utrecht"),
        ("Postfach 10 11 23, 70010 Stuttgart", "Postfach 10 11 23, 70010 Stuttgart"),
        # DE with "in" before the postcode; JP with building and room
        (
            "Ich wohne in der Goethestraße 12 in 60313 Frankfurt am Main.",
            "Goethestraße 12 in 60313 Frankfurt am Main",
        ),
        ("東京都渋谷区神南1-23-10 ハイツ301号室に", "東京都渋谷区神南1-23-10 ハイツ301号室"),
        # multi-line letter / invoice blocks
        (
            "Bill to:\nHarold Jenkins\n4821 Maple Avenue\nSpringfield, IL 62704\n\nItems:",
            "4821 Maple Avenue\nSpringfield, IL 62704",
        ),
        ("Herrn\nKlaus Becker\nLindenstraße 14\n80331 München", "Lindenstraße 14\n80331 München"),
    ],
)
def test_address_forms(rules, text, address):
    assert values(rules, text, "STREET_ADDRESS") == [address]
    assert values(rules, text, "PHONE") == []


@pytest.mark.parametrize(
    "text",
    [
        "Room 12 Box 3 is full",  # no APO/FPO/DPO line
        "We met at 10 Downing and talked for 5 hours.",
        "Chapter 3 Street Fighting, page 45",
        "Version 4000-442 released",
    ],
)
def test_not_addresses(rules, text):
    assert values(rules, text, "STREET_ADDRESS") == []


def test_postcode_checks_per_country():
    assert postcode_ok("4000-442") and postcode_ok("01310-200", "SP")
    assert postcode_ok("SW1A 2AA") and postcode_ok("EC1A 1BB") and not postcode_ok("Q1 1AA")
    assert postcode_ok("3500 AB") and not postcode_ok("0500 AB")
    assert postcode_ok("20500", "DC") and postcode_ok("09012", "AE")


# ------------------------------------------------------------------------ phones


@pytest.mark.parametrize(
    "text, phones",
    [
        ("Telemóvel: 912 345 678 / 21 345 6789", ["912 345 678", "21 345 6789"]),
        ("Telefon: 089 / 12 34 56 78", ["089 / 12 34 56 78"]),
        ("Celular: (11) 98765-4321, fixo (21) 2555-1234", ["(11) 98765-4321", "(21) 2555-1234"]),
        ("联系电话：138 0013 8000 或 010-6552 9988", ["138 0013 8000", "010-6552 9988"]),
        ("My number is 0049 176 12345678", ["0049 176 12345678"]),
        ("Phone: 555-0142", ["555-0142"]),
    ],
)
def test_phone_forms_beyond_the_basics(rules, text, phones):
    assert values(rules, text, "PHONE") == phones


@pytest.mark.parametrize(
    "text",
    [
        "Order #100234567 placed on 2024-03-18 12:45:10.",
        "logged at 18/03/2024 09:15:02 by cron",
        "Envio para 4000-442 Porto",  # a PT postcode before its city
        "Ticket 555-123-4567 was closed.",
        "Kundennummer 123 456 789",
        "ISBN 0-306-40615-2",
        "Version 10.2.1502 (build 4.18.0-513)",
    ],
)
def test_numbers_that_are_not_phones_in_context(rules, text):
    assert values(rules, text, "PHONE") == []


# ------------------------------------------------------------------------ names


@pytest.mark.parametrize(
    "text, names",
    [
        ("Bonjour Madame Lefèvre, votre commande est prête.", ["Lefèvre"]),
        ("Der Termin mit Herrn Wagner ist am Dienstag.", ["Wagner"]),
        ("Bitte Rückruf an Frau Dr. Weber.", ["Weber"]),
        ("Le escribo por la factura. Atentamente, Lucía Fernández", ["Lucía Fernández"]),
        ("Segue o anexo. Abraços, João Pereira", ["João Pereira"]),
        ("Voornaam: Sanne\nAchternaam: Bakker", ["Sanne", "Bakker"]),
        ("Liebe Grüße aus Hamburg, Deine Anna", ["Anna"]),
        ("Bill to: Harold Jenkins\nShip to: Warehouse 4", ["Harold Jenkins"]),
    ],
)
def test_name_cues_across_languages(rules, text, names):
    assert values(rules, text, "PERSON") == names


@pytest.mark.parametrize(
    "text",
    [
        "Hallo zusammen, meine Mail ist unten und Meine Nummer folgt.",
        "Naam: \nAdres: Kerkstraat 45",
        "Ansprechpartner: Abteilung Einkauf",
        "Olá, segue em anexo a Nota Fiscal.",
        "Invoice INV-2024-00123, Rechnungsnr. 4711",
        "Abito in Via dei Mille 12, 80121 Napoli.",
        "Bonjour, Service Client à votre écoute.",
        "Aufgaben: Datenbank Migration, Server Update",
    ],
)
def test_labels_and_common_words_are_not_names(rules, text):
    assert values(rules, text, "PERSON") == []


def test_stop_list_covers_categories():
    for word in ("Naam", "Voornaam", "Apellidos", "Meine", "Mittwoch", "Rechnungsnr", "Lager"):
        assert has_common_word(word), word
    assert not has_common_word("Joost Vermeulen")
