"""PII detection that reads context: names written again, names of places, names in scripts
without letter case, identifiers beside phone-shaped numbers, and published test values.

Each case is a realistic line; the checks name which values must be found (whole) and which
must not. The specimen lists are checked against the published rules they claim to follow
(Luhn for the test cards, ISO 13616 mod 97 for the example IBANs).
"""

from __future__ import annotations

import pytest

from opengemma.safety.pii_numbers import iban_ok, luhn_ok
from opengemma.safety.pii_specimens import _EXAMPLE_IBANS, _TEST_CARDS, is_specimen

# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "text, names",
    [
        # a name found once (a role's speaker label) is found where it is written again
        (
            "Agent (Kayla): Hi, thanks for waiting.\nMember: ok\nAgent (Kayla): Done. Kayla here.",
            ["Kayla", "Kayla", "Kayla"],
        ),
        # a surname alone after the full name was seen
        (
            "Ms. Danielle Okafor wrote again. We told Okafor yesterday.",
            ["Danielle Okafor", "Okafor"],
        ),
        # chat speakers with timestamps, a name the first-name lexicon lacks
        (
            "[19:20] Bruna: oi Thiago!!\n[19:21] Thiago: (21) 99812-3344",
            ["Bruna", "Thiago", "Thiago"],
        ),
        # form columns: a label after two spaces, a surname in capitals, a gender suffix
        ("Nom : LEFEBVRE          Prénom : Manon", ["LEFEBVRE", "Manon"]),
        ("Mitarbeiter/in: Ursula Kämmerer        Personalnummer: 004417", ["Ursula Kämmerer"]),
        # Dutch initials, a bracketed given name, a capitalised particle after a title
        (
            "Dhr. J.P. (Jan-Pieter) de Vries\nGeachte heer De Vries,",
            ["J.P. (Jan-Pieter) de Vries", "De Vries"],
        ),
        ("Turkish: Zeynep hanımın numarası neydi?", ["Zeynep"]),
        ("z doradcą, panią Agnieszką Kowalczyk, tel.", ["Agnieszką Kowalczyk"]),
    ],
)
def test_names_from_context(values, text, names):
    assert values(text, "PERSON") == names


@pytest.mark.parametrize(
    "text",
    [
        "Adresse : 12 rue Gustave Eiffel, 31240 L'Union",
        "Rendez-vous à l'amphithéâtre Louis Néel, Laboratoire Jean Kuntzmann.",
        "Endereço: Av. Afonso Pena, 3111, sala 204",
        "Adres: al. Jana Pawła II 41/7",
        "Invoice total 1,000,000.005 JPY; VAT Reg. GB 284 4471 92",
        "Gregory T. Hartwell signed.\nHartwell & Price LLP, Dallas",
    ],
)
def test_place_firm_and_acronym_names_are_not_people(values, text):
    found = values(text, "PERSON")
    assert not [n for n in found if n not in ("Gregory T. Hartwell",)], found


@pytest.mark.parametrize(
    "text, names",
    [
        ("서울특별시 강남구 테헤란로 152\n김민준 귀하", ["김민준"]),
        (
            "갱신 보험료는 874,500원이며, 담당 설계사 이서연 (010-4827-3316)이 "
            "연락드릴 예정입니다.",
            ["이서연"],
        ),
        ("환자명: 한지민   생년월일: 1967.02.28\n담당의: 윤태호 교수", ["한지민", "윤태호"]),
        (
            "[22:10] 지훈: 누나 나 번호 바뀌었어\n[22:11] 수빈: ㅇㅋ\n"
            "[22:13] 수빈: 정민 오빠한테도",
            ["지훈", "수빈", "수빈", "정민"],
        ),
        ("客户：林志豪 先生\n处理人员：黃美玲", ["林志豪", "黃美玲"]),
        ("张先生 收\n价税合计（大写）伍仟陆佰玖拾玖元整", ["张"]),
        (
            "[14:02] 美咲: お疲れさまです！明日の打ち合わせ、中村部長も参加されます\n"
            "[14:03] 大輔: 了解です",
            ["美咲", "中村", "大輔"],
        ),
        ("يرجى التواصل مع مديرة العلاقة\nنورة القحطاني على الرقم", ["نورة القحطاني"]),
        ("الاسم الكامل: فاطمة الزهراء الحمادي", ["فاطمة الزهراء الحمادي"]),
        ("आपातकालीन संपर्क: प्रिया शर्मा (पत्नी)", ["प्रिया शर्मा"]),
    ],
)
def test_names_in_scripts_without_letter_case(values, text, names):
    assert values(text, "PERSON") == names


def test_korean_organisations_and_words_before_titles_are_not_names(values):
    text = "한빛보험 고객센터입니다. 담당 설계사가 연락드릴 예정입니다."
    assert values(text, "PERSON") == []


# -------------------------------------------------------------- numbers and secrets


@pytest.mark.parametrize(
    "text",
    [
        "Registered in England No. 04417283, VAT GB 812 4471 09",
        "Matthias Brand · USt-IdNr. DE 149 221 835",
        "TVA intracommunautaire FR 40 732829320",
        "Seguradora Atlântica, S.A. – NIPC 503 220 811",
        "Tracking: 1Z 999 AA1 01 2345 6784 (UPS Ground)",
        "한빛푸드 · 사업자등록번호 214-88-40917",
        "Release 4.2.0 (2026-11-18) is out",
        "Boleto: 42000.06330 79012.345678 9",
    ],
)
def test_identifiers_are_not_phones(values, text):
    assert values(text, "PHONE") == []


@pytest.mark.parametrize(
    "text, dob",
    [
        ("Geburtsdatum: 3. November 1975        Eintritt: 01.04.2019", ["3. November 1975"]),
        ("生年月日：昭和33年6月3日", ["昭和33年6月3日"]),
    ],
)
def test_birth_dates_in_more_forms(values, text, dob):
    assert values(text, "DATE_OF_BIRTH") == dob


@pytest.mark.parametrize(
    "text, secret",
    [
        ("  501  curl -u ops:Tr1dent-Harbour-88 https://grafana.int", "Tr1dent-Harbour-88"),
        ("192.168.40.12:5432:bi:etl_writer:km*jHESgYNhrh", "km*jHESgYNhrh"),
        ("mysql -u root -pS3cure!x2 shop", "S3cure!x2"),
    ],
)
def test_passwords_on_command_lines_and_in_password_files(values, text, secret):
    assert secret in values(text, "SECRET")


# ---------------------------------------------------------------- published test values


def test_specimen_lists_follow_the_check_digit_rules():
    assert all(luhn_ok(c) for c in _TEST_CARDS)
    assert all(iban_ok(i) for i in _EXAMPLE_IBANS)


@pytest.mark.parametrize(
    "text, type_",
    [
        ("Use the card 4242 4242 4242 4242 with any CVC", "CREDIT_CARD"),
        ("card 4111 1111 1111 1111, amex 3782 822463 10005", "CREDIT_CARD"),
        ("The sandbox accepts jane.doe@example.com and ops@staging.example.org", "EMAIL"),
        ("mail bob@shop.test", "EMAIL"),
        ("SSN (specimen) 078-05-1120", "US_SSN"),
        ("IBAN GB82 WEST 1234 5698 7654 32", "IBAN"),
        ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "API_KEY"),
        ('stripe.publishableKey = "pk_live_51HqLyjWDarjtT1zdp7dcTYooMQauvd"', "API_KEY"),
        ("listening on 127.0.0.1:8080 and [::1]:8080, bound 0.0.0.0", "IP_ADDRESS"),
        ("Ship to 123 Main Street, Anytown, CA 90210", "STREET_ADDRESS"),
    ],
)
def test_published_test_values_are_not_reported(values, text, type_):
    assert values(text, type_) == []


def test_real_looking_values_beside_them_still_are(values):
    text = (
        "Test card 4242 4242 4242 4242; the customer's card 4539 1488 0343 6467 was charged. "
        "Reply to maria.lopez@mailbox.org, not test@example.com. Client 81.145.203.9."
    )
    assert values(text, "CREDIT_CARD") == ["4539 1488 0343 6467"]
    assert values(text, "EMAIL") == ["maria.lopez@mailbox.org"]
    assert values(text, "IP_ADDRESS") == ["81.145.203.9"]
    assert not is_specimen("IBAN", "GB95 LOYD 3096 2871 4522 09")


# ---------------------------------------------------------- Cyrillic, Vietnamese, Indonesian


@pytest.mark.parametrize(
    "text, type_, found",
    [
        ("С уважением,\nКузнецов Андрей Петрович", "PERSON", ["Кузнецов Андрей Петрович"]),
        ("Передайте Ольге Николаевне Смирновой", "PERSON", ["Ольге Николаевне Смирновой"]),
        ("Подписал: Петров И. И.", "PERSON", ["Петров И. И."]),
        (
            "Адрес: 125009, г. Москва, ул. Тверская, д. 7, кв. 12.",
            "STREET_ADDRESS",
            ["125009, г. Москва, ул. Тверская, д. 7, кв. 12"],
        ),
        ("Дата рождения: 14.03.1986", "DATE_OF_BIRTH", ["14.03.1986"]),
        ("Họ và tên: Trần Văn Hùng", "PERSON", ["Trần Văn Hùng"]),
        ("Ngày sinh: ngày 5 tháng 9 năm 1991", "DATE_OF_BIRTH", ["ngày 5 tháng 9 năm 1991"]),
        (
            "Giao tới Số 45 phố Hàng Bài, Phường Hàng Bài, Quận Hoàn Kiếm, Hà Nội",
            "STREET_ADDRESS",
            ["Số 45 phố Hàng Bài, Phường Hàng Bài, Quận Hoàn Kiếm, Hà Nội"],
        ),
        (
            "Kirim ke Jl. Gatot Subroto No. 12, RT 03/RW 05, Jakarta Selatan 12710",
            "STREET_ADDRESS",
            ["Jl. Gatot Subroto No. 12, RT 03/RW 05, Jakarta Selatan 12710"],
        ),
        ("Tanggal lahir: 17 Agustus 1985", "DATE_OF_BIRTH", ["17 Agustus 1985"]),
        ("Datum narození: 12. března 1979", "DATE_OF_BIRTH", ["12. března 1979"]),
        ("Fødselsdato: 3. marts 1984", "DATE_OF_BIRTH", ["3. marts 1984"]),
        ("Med venlig hilsen\nLars Kristensen", "PERSON", ["Lars Kristensen"]),
    ],
)
def test_more_languages(values, text, type_, found):
    assert values(text, type_) == found


def test_a_street_named_after_a_person_is_not_a_person(values):
    text = "Số 12 đường Nguyễn Trãi, Phường Bến Thành, Quận 1, TP. Hồ Chí Minh"
    assert values(text, "PERSON") == []
    assert values(text, "STREET_ADDRESS") == [text]
