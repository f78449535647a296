"""PII detectors on postal, phone and name forms written the way people write them.

Each case is a realistic sentence; positives say which value must be found (whole), negatives
which values must not be. Checked against the formats' published rules (postcode shapes per
country, ITU-T E.164 / national numbering plans, US military mail), not against one corpus.
"""

from __future__ import annotations

import pytest

from opengemma.safety.pii_address import postcode_ok
from opengemma.safety.pii_names import has_common_word

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
        ("Mail: PO Box 123, San Francisco, CA 94105", "PO Box 123, San Francisco, CA 94105"),
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
def test_address_forms(values, text, address):
    assert values(text, "STREET_ADDRESS") == [address]
    assert values(text, "PHONE") == []


@pytest.mark.parametrize(
    "text",
    [
        "Room 12 Box 3 is full",  # no APO/FPO/DPO line
        "We met at 10 Downing and talked for 5 hours.",
        "Chapter 3 Street Fighting, page 45",
        "Version 4000-442 released",
    ],
)
def test_not_addresses(values, text):
    assert values(text, "STREET_ADDRESS") == []


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
        ("Call me on 854-1987 tonight", ["854-1987"]),  # 7 digits: found where context says so
        ("Fax 089 / 12 34 56 79 (Zentrale)", ["089 / 12 34 56 79"]),
        ("ring +44 20 7946 0958 or +1 415 555 2671", ["+44 20 7946 0958", "+1 415 555 2671"]),
    ],
)
def test_phone_forms_beyond_the_basics(values, text, phones):
    assert values(text, "PHONE") == phones


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
        # numbers in prose, tables and code: decimals, lists, ratios, ranges, sums
        "three runs took 45.5 / 45.1 / 34.6 s and 50.3 / 58.4 / 25.3 s",
        "| 0.3 | 1.45 / 5.11 / 9.08 | 318 / 398 / 407 | 228 / 332 / 2231 |",
        "rows of 640 / 1152 values; recall/precision 0.799 / 0.842",
        ">>> c.next_minus(1)\nDecimal('0.999999999') and Decimal('22026.4658')",
        "token id 262144 is outside the vocabulary (0..262143)",
        "best window (characters 1725-2073), see IEEE standard 854-1987",
        "h = h * 69069 + 907133923",
        "kernel: [8812447.220113] IPv4: martian source",
    ],
)
def test_numbers_that_are_not_phones_in_context(values, text):
    assert values(text, "PHONE") == []


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
def test_name_cues_across_languages(values, text, names):
    assert values(text, "PERSON") == names


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
def test_labels_and_common_words_are_not_names(values, text):
    assert values(text, "PERSON") == []


def test_stop_list_covers_categories():
    for word in ("Naam", "Voornaam", "Apellidos", "Meine", "Mittwoch", "Rechnungsnr", "Lager"):
        assert has_common_word(word), word
    assert not has_common_word("Joost Vermeulen")


# ------------------------------------------------- Polish, Swedish, Turkish, Hindi, Arabic


@pytest.mark.parametrize(
    "text, type_, found",
    [
        ("Z poważaniem, Małgorzata Wiśniewska", "PERSON", ["Małgorzata Wiśniewska"]),
        ("Pani Katarzyna Zielińska mieszka w Krakowie.", "PERSON", ["Katarzyna Zielińska"]),
        ("Med vänliga hälsningar\nBjörn Andersson", "PERSON", ["Björn Andersson"]),
        ("Sayın Ahmet Yılmaz, siparişiniz kargoya verildi.", "PERSON", ["Ahmet Yılmaz"]),
        ("नमस्ते, मेरा नाम राहुल शर्मा है।", "PERSON", ["राहुल शर्मा"]),
        ("السيدة فاطمة الزهراء، نرجو الاتصال بنا", "PERSON", ["فاطمة الزهراء"]),
        ("Adres: ul. Marszałkowska 84/92 m. 15, 00-514 Warszawa", "STREET_ADDRESS",
         ["ul. Marszałkowska 84/92 m. 15, 00-514 Warszawa"]),
        ("Adress: Drottninggatan 53, 111 21 Stockholm", "STREET_ADDRESS",
         ["Drottninggatan 53, 111 21 Stockholm"]),
        ("Adres: Bağdat Caddesi No: 145 D: 7, 34710 Kadıköy/İstanbul", "STREET_ADDRESS",
         ["Bağdat Caddesi No: 145 D: 7, 34710 Kadıköy/İstanbul"]),
        ("Deliver to Flat 12, MG Road, Bengaluru 560001.", "STREET_ADDRESS",
         ["Flat 12, MG Road, Bengaluru 560001"]),
        ("पता: मकान नं. 12, गांधी नगर, जयपुर 302015", "STREET_ADDRESS",
         ["मकान नं. 12, गांधी नगर, जयपुर 302015"]),
        ("العنوان: شارع الملك فهد، حي العليا، الرياض 12211", "STREET_ADDRESS",
         ["شارع الملك فهد، حي العليا، الرياض 12211"]),
        ("Zadzwoń: 22 123 45 67", "PHONE", ["22 123 45 67"]),
        ("Cep: 0532 123 45 67", "PHONE", ["0532 123 45 67"]),
        ("للتواصل واتساب 0501234567", "PHONE", ["0501234567"]),
        ("Data urodzenia: 12.03.1985", "DATE_OF_BIRTH", ["12.03.1985"]),
        ("Doğum tarihi: 5 Kasım 1990", "DATE_OF_BIRTH", ["5 Kasım 1990"]),
        ("تاريخ الميلاد: 1988-07-15", "DATE_OF_BIRTH", ["1988-07-15"]),
        ("Numer konta: 61 1090 1014 0000 0712 1981 2874", "IBAN",
         ["61 1090 1014 0000 0712 1981 2874"]),
    ],
)  # fmt: skip
def test_more_languages(values, text, type_, found):
    assert values(text, type_) == found


@pytest.mark.parametrize(
    "text", ["PESEL: 85031212345", "Personnummer 19850312-1234", "TC Kimlik No: 12345678901"]
)
def test_national_ids_are_not_phones(values, text):
    assert values(text, "PHONE") == []


# ------------------------------------------------------------ e-mail and secrets


@pytest.mark.parametrize(
    "text, email",
    [
        ("Kontakt: jürgen.müller@beispiel.de", "jürgen.müller@beispiel.de"),
        ("E-Mail: anna.schmidt(at)firma.de", "anna.schmidt(at)firma.de"),
        ("邮箱：zhang.wei@example.cn。", "zhang.wei@example.cn"),
    ],
)
def test_email_forms(values, text, email):
    assert values(text, "EMAIL") == [email]


@pytest.mark.parametrize(
    "text, secret",
    [
        ("DB_PASSWORD=s3cr3tP@ss", "s3cr3tP@ss"),
        ('"password": "Sommer2024!"', "Sommer2024!"),
        ("passwort: Geheim!2023", "Geheim!2023"),
        ('password = os.environ["DB_PASSWORD"]', None),
        ("password: ${DB_PASS}", None),
        ("The password must be at least 8 characters.", None),
        ("pass: settings.DB_PASSWORD", None),
        ("PASSWORD=changeme123", None),
    ],
)
def test_passwords_assigned_in_configs(values, text, secret):
    assert values(text, "SECRET") == ([secret] if secret else [])


def test_private_key_mentions_and_templates_are_not_keys(values):
    body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"
    real = f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----"
    assert values(f"key = '''{real}'''", "PRIVATE_KEY") == [real]
    for text in (
        "Keys start with -----BEGIN PRIVATE KEY----- and end with -----END PRIVATE KEY-----.",
        "-----BEGIN RSA PRIVATE KEY-----\n<your private key here>\n-----END RSA PRIVATE KEY-----",
    ):
        assert values(text, "PRIVATE_KEY") == []


@pytest.mark.parametrize(
    "text, type_, found",
    [
        ("OID 1.3.6.1.4.1.311 and 192.168.1.256", "PHONE", []),
        ("Population 8,336,817 (2020)", "PHONE", []),
        ("Sehr geehrte Damen und Herren, Hola a todos", "PERSON", []),
        ("git remote add origin git@github.com:org/repo.git", "EMAIL", []),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "SECRET", []),
        ("Beste mevrouw De Jong, uw pakket komt morgen.", "PERSON", ["De Jong"]),
        ("Me liga no (21) 99876-5432.", "PHONE", ["(21) 99876-5432"]),
        ("ci vediamo in Via Giuseppe Verdi 14, 10124 Torino. Il mio", "STREET_ADDRESS",
         ["Via Giuseppe Verdi 14, 10124 Torino"]),
        ("meu endereço é Rua Visconde de Pirajá, 550, apto 1201, Ipanema, Rio de Janeiro - RJ, "
         "22410-002.", "STREET_ADDRESS",
         ["Rua Visconde de Pirajá, 550, apto 1201, Ipanema, Rio de Janeiro - RJ, 22410-002"]),
    ],
)  # fmt: skip
def test_hard_cases(values, text, type_, found):
    assert values(text, type_) == found


@pytest.mark.parametrize(
    "text, names",
    [
        ("Ik heb Lisa gisteren gebeld.", ["Lisa"]),
        ("Ho parlato con Giulia ieri sera.", ["Giulia"]),
        ("Jag träffade Anders igår på jobbet.", ["Anders"]),
        ("Hablé con Carlos ayer.", ["Carlos"]),  # the model's span "Carlos ayer" is trimmed
        ("Las rosas son rojas y compré una Rosa en el mercado.", []),  # an article before it
        ("The office in Austin reported Chrome crashes on Windows.", []),
        ("Med vänliga hälsningar\nBjörn Andersson", ["Björn Andersson"]),
    ],
)
def test_lone_first_names_and_their_limits(values, text, names):
    assert values(text, "PERSON") == names


def test_lexicon_reads_names_with_accents():
    from opengemma.safety.pii_names import first_names

    assert {"Björn", "José", "Łukasz", "Ayşe", "François"} <= first_names()


@pytest.mark.parametrize(
    "text, type_, found",
    [
        ("〒060-0001 北海道札幌市中央区北1条西2丁目1番地", "STREET_ADDRESS",
         ["〒060-0001 北海道札幌市中央区北1条西2丁目1番地"]),
        ("地址：台北市信義區信義路五段7號", "STREET_ADDRESS", ["台北市信義區信義路五段7號"]),
        ("Caro Luca,\nci vediamo domani.\nA presto,\nChiara", "PERSON", ["Luca", "Chiara"]),
        ("Saludos cordiales,\nJavier Ortega", "PERSON", ["Javier Ortega"]),
        ("Greetings from Berlin! Talk soon.", "PERSON", []),
    ],
)  # fmt: skip
def test_more_grammar(values, text, type_, found):
    assert values(text, type_) == found


def test_names_in_table_columns(values):
    text = (
        "customer_id,first_name,last_name,phone,city\n"
        "1001,Hans,Becker,+49 89 1234567,München\n1002,Marie,Laurent,+33 1 42 68 53 00,Paris"
    )
    assert values(text, "PERSON") == ["Hans", "Becker", "Marie", "Laurent"]
    assert values("id;product;city\n1;Blue Vase;Paris", "PERSON") == []


def test_url_userinfo_is_not_an_email(values):
    text = "SENTRY_DSN=https://abc123def456@o12345.ingest.sentry.io/678"
    assert values(text, "EMAIL") == []


@pytest.mark.parametrize(
    "text",
    [
        "12 rue de Rivoli 75001 Paris",
        "Via Roma n. 10, 00184 Roma",
        "c/ Mayor, 5, 28013 Madrid",
        "Hauptstraße 5a\nD-10115 Berlin",
        "Bahnhofstrasse 10, CH-8001 Zürich",
        "Kerkstraat 12-II, 1017 GC Amsterdam",
        "123 Main St Apt 4B, Springfield, IL 62701",
        "45 Rue Sainte-Catherine, 33000 Bordeaux",
        "Leopoldstraße 44 • 80802 München",
    ],
)
def test_whole_address_lines(values, text):
    assert values(text, "STREET_ADDRESS") == [text]


def test_ip_after_a_word_ending_in_ver(values):
    assert values("server 172.16.254.1:8080", "IP_ADDRESS") == ["172.16.254.1"]
    assert values("version 10.2.0.1 released", "IP_ADDRESS") == []
