"""The PII detectors on the written forms the world uses: phones, names, addresses, secrets."""

from __future__ import annotations

import pytest

from opengemma.safety.pii import Scanner
from opengemma.safety.pii_address import postcode_ok
from opengemma.safety.pii_gemma import locate, mask, parse_answer
from opengemma.safety.pii_secrets import is_placeholder


@pytest.mark.parametrize(
    "text, phone",
    [
        ("Ruf an: 0049 30 901820.", "0049 30 901820"),
        ("Llámame al 0034 691 234 567", "0034 691 234 567"),
        ("From the US dial 011 44 20 7946 0958 now", "011 44 20 7946 0958"),
        ("Tél. 01.01.81.09.44", "01.01.81.09.44"),
        ("Telefon 030 44484644", "030 44484644"),
        ("Mobil: +49 (0)152 28817364", "+49 (0)152 28817364"),
        ("call me on (555) 013-2211", "(555) 013-2211"),  # possible, not valid: context says phone
        ("お問い合わせは03-5468-1234へ", "03-5468-1234"),
        ("手机186 2100 3344。", "186 2100 3344"),
        ("전화 051-749-1234, 휴대폰", "051-749-1234"),
        ("chiamare lo 011 561 2345", "011 561 2345"),  # Turin, not a US exit code
    ],
)
def test_phone_forms(values, text, phone):
    assert values(text, "PHONE") == [phone]


@pytest.mark.parametrize(
    "text",
    [
        "ts=1710757351 took 1710757352ms",
        "order 4155550134 shipped",
        "ISBN 978-0-262-03384-8",
        "Facture n° 2024-000123 du 05/03/2024",
        "Rechnungsnummer 2023-0045-117",
        "Total 1.234,56 € / $1,299.00",
        "〒150-0002 東京都",
        "São Paulo - SP, 01310-200 and FPO AP 96620-2820",
        "Version 3.2.1 built 20240318",
    ],
)
def test_numbers_that_are_not_phones(values, text):
    assert values(text, "PHONE") == []


@pytest.mark.parametrize(
    "text, name",
    [
        ("田中 花子 様\nいつもお世話になっております。", "田中 花子"),
        ("担当：清水裕太", "清水裕太"),
        ("尊敬的王小明先生：", "王小明"),
        ("김민준 님께, 서류를 보내 주세요.", "김민준"),
        ("Sehr geehrte Frau Anneliese Brückner,", "Anneliese Brückner"),
        ("Bien à vous,\nBenoît Girard", "Benoît Girard"),
        ("Hola Carmen Navarro:", "Carmen Navarro"),
        ("Cognome e nome: Rossi Francesca", "Rossi Francesca"),
        ("Ruf an: 0049 30 901820, Frau Müller", "Müller"),  # not English: spaCy's "Ruf" dropped
    ],
)
def test_names_across_scripts(values, text, name):
    assert values(text, "PERSON") == [name]


@pytest.mark.parametrize(
    "text",
    [
        "Success! The Luhn check and the Deep Learning chapter.",
        "Ihre Rückzahlung ist unterwegs. Auftrag erledigt.",
        "Groetjes en tot morgen",
        "고객님 감사합니다",
    ],
)
def test_capitalised_common_words_are_not_names(values, text):
    assert values(text, "PERSON") == []


@pytest.mark.parametrize(
    "text, address",
    [
        (
            "〒100-0005 東京都千代田区丸の内1丁目9番1号まで",
            "〒100-0005 東京都千代田区丸の内1丁目9番1号",
        ),
        ("请寄至北京市朝阳区建国路88号。", "北京市朝阳区建国路88号"),
        ("주소는 서울특별시 강남구 테헤란로 152로", "서울특별시 강남구 테헤란로 152"),
        ("Ship to PSC 1234, Box 5678\nAPO AE 09204.", "PSC 1234, Box 5678\nAPO AE 09204"),
        ("Navy: USS Nimitz FPO AP 96620-2820", "USS Nimitz FPO AP 96620-2820"),
        (
            "em Rua das Laranjeiras, 245, apto 302\nLaranjeiras, Rio de Janeiro - RJ, 22240-003.",
            "Rua das Laranjeiras, 245, apto 302\nLaranjeiras, Rio de Janeiro - RJ, 22240-003",
        ),
        ("naar Keizersgracht 123\n1015 CJ Amsterdam?", "Keizersgracht 123\n1015 CJ Amsterdam"),
        ("Am Kupfergraben 6a, 10117 Berlin", "Am Kupfergraben 6a, 10117 Berlin"),
        (
            "at 250 West 57th Street, Suite 1200\nNew York, NY 10107.",
            "250 West 57th Street, Suite 1200\nNew York, NY 10107",
        ),
        ("Flat 4, 22 Cromwell Road, London SW7 2EZ", "Flat 4, 22 Cromwell Road, London SW7 2EZ"),
    ],
)
def test_addresses(values, text, address):
    assert values(text, "STREET_ADDRESS") == [address]


def test_postcode_checks():
    assert postcode_ok("1015 CJ") and not postcode_ok("1015 SS")
    assert postcode_ok("22240-003", "RJ") and not postcode_ok("22240-003", "XX")
    assert postcode_ok("10107", "NY") and not postcode_ok("10107", "ZZ")
    assert postcode_ok("SW7 2EZ") and not postcode_ok("SW7 2CZ")
    assert postcode_ok("1250-146") and not postcode_ok("0250-146")


@pytest.mark.parametrize(
    "value, placeholder",
    [
        ("ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", True),
        ("sk_live_****************", True),
        ("${API_KEY}", True),
        ("<password>", True),
        ("your-token-here", True),
        ("ghp_ejuZ590ne6AIvn2IovVly4kXJk2txD9dFq1k", False),
        ("FonZe4p19g7NH73Nok7DxAfU", False),
    ],
)
def test_placeholders(value, placeholder):
    assert is_placeholder(value) is placeholder


def test_placeholders_are_not_reported_and_assigned_values_are_secrets(rules):
    text = (
        'TOKEN = "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"\n'
        'slack = "xoxb-xxxxxxxxxxxx-xxxxxxxxxxxx"\n'
        "db_password: FonZe4p19g7NH73Nok7DxAfU\nsecret_key = ****************\n"
    )
    found = rules.scan([text])[0]
    assert [(text[f.start : f.end], f.type) for f in found] == [
        ("FonZe4p19g7NH73Nok7DxAfU", "SECRET")
    ]
    assert found[0].score < 0.8  # lower confidence than a provider key format


def test_gemma_answer_parsing():
    answer = (
        "Here is what I found:\n1. **Name**: Bob Stone\n- ADDRESS - 12 Elm Street, Dover.\n"
        "* phone number: `207-222-2222`\nEmail: <EMAIL>\nNONE\nfoo: bar\n"
    )
    assert parse_answer(answer) == [
        ("PERSON", "Bob Stone"),
        ("STREET_ADDRESS", "12 Elm Street, Dover"),
        ("PHONE", "207-222-2222"),
    ]
    text = "Bob Stone met bob stone at Bob Stone's"
    assert locate(text, "bob stone", [(0, 9)]) == (14, 23)
    assert locate(text, "Alice", []) is None  # invented values add nothing
    assert (
        mask("call 555-0101 now", [type("F", (), {"start": 5, "end": 13, "type": "PHONE"})])
        == "call <PHONE> now"
    )


def test_gemma_second_pass_on_the_embedded_model(lm, rules):
    from opengemma.safety.pii_gemma import GemmaPIIDetector

    det = GemmaPIIDetector(lm, max_tokens=32)
    text = "Hi, I am Bob Stone, ring me on 0171 2345678. I live near the old mill in Dover."
    found = rules.scan([text])[0]
    answer = det.ask(mask(text, found))
    assert isinstance(answer, str) and "<PHONE>" not in mask(text, [])
    added = det.second_pass([text], [found])[0]
    for f in added:  # only verbatim values, never on top of what the rules found
        assert text[f.start : f.end] and f.detector == "gemma-second-pass"
        assert all(f.end <= g.start or f.start >= g.end for g in found)
    both = Scanner(strict=True, second_pass=[det]).scan([text])[0]
    assert {(f.start, f.end) for f in found} <= {(f.start, f.end) for f in both}
    assert det.describe()["kind"] == "model"
