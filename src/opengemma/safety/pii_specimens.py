"""Values that look like personal data but are published for testing or documentation.

A scrubber that redacts them loses nothing private and breaks documentation and test
fixtures, so they are not reported:

- e-mail addresses at the domains reserved for documentation (RFC 2606 and RFC 6761:
  `example.com/.net/.org`, and the `.example`, `.test`, `.invalid`, `.localhost` names);
- IP addresses that identify no host: loopback (`127.0.0.0/8`, `::1`) and unspecified
  (`0.0.0.0`, `::`);
- the card numbers payment providers publish for test mode (Stripe, Adyen, Braintree, PayPal:
  `4242 4242 4242 4242`, `4111 1111 1111 1111`, `5555 5555 5555 4444`, `3782 822463 10005`...);
- the specimen US Social Security numbers the SSA voided (`078-05-1120`, `123-45-6789`);
- the example IBANs of the national banking standards and of the IBAN registry
  (`GB82 WEST 1234 5698 7654 32`, `DE89 3704 0044 0532 0130 00`...);
- API keys published in providers' documentation (AWS's `AKIAIOSFODNN7EXAMPLE`, Stripe's
  `sk_test_4eC39HqLyjWDarjtT1zdp7dc`), keys that say EXAMPLE, and Stripe publishable keys
  (`pk_live_`/`pk_test_`: meant to be embedded in web pages);
- placeholder addresses of forms and documentation (`123 Main Street, Anytown`,
  `Musterstraße 1, 12345 Musterstadt`).
"""

from __future__ import annotations

import ipaddress
import re

_RESERVED_DOMAINS = re.compile(
    r"(?i)@(?:[\w-]+\.)*(?:example\.(?:com|net|org)|example|test|invalid|localhost)$"
)
_TEST_CARDS = frozenset(
    "4242424242424242 4000056655665556 4111111111111111 4012888888881881 4222222222222 "
    "4000000000000002 4000000000009995 4000000000000077 4000000000003220 4000002500003155 "
    "4000000000000341 4000000000000069 4000000000000127 4000000000000119 4917610000000000 "
    "4988438843884305 4166676667666746 4646464646464644 4005519200000004 4009348888881881 "
    "5555555555554444 2223003122003222 5200828282828210 5105105105105100 5454545454545454 "
    "5555555555555557 5431111111111111 5500000000000004 2222400070000005 5101180000000007 "
    "378282246310005 371449635398431 378734493671000 370000000000002 340000000000009 "
    "6011111111111117 6011000990139424 6011000400000000 6011601160116611 6445644564456445 "
    "3056930009020004 36227206271667 30569309025904 38520000023237 36006666333344 "
    "3566002020360505 3530111333300000 3566111111111113 6200000000000005 6250941006528599 "
    "6759649826438453 6304000000000000".split()
)
_SPECIMEN_SSNS = frozenset({"078051120", "123456789"})
_EXAMPLE_IBANS = frozenset(
    "GB82WEST12345698765432 GB33BUKB20201555555555 DE89370400440532013000 "
    "FR1420041010050500013M02606 FR7630006000011234567890189 ES9121000418450200051332 "
    "IT60X0542811101000000123456 NL91ABNA0417164300 NL02ABNA0123456789 BE68539007547034 "
    "BE71096123456769 CH9300762011623852957 AT611904300234573201 PT50000201231234567890154 "
    "LU280019400644750000 IE29AIBK93115212345678 PL61109010140000071219812874 "
    "SE4550000000058398257466 DK5000400440116243 NO9386011117947 FI2112345600000785 "
    "SA0380000000608010167519 AE070331234567890123456 TR330006100519786457841326 "
    "BR9700360305000010009795493P1 GR1601101250000000012300695 CZ6508000000192000145399".split()
)
_DOC_KEYS = frozenset(
    {
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        "sk_test_BQokikJOvBiI2HlWgH4olfQ2",
        "pk_test_TYooMQauvdEDq54NiTphI7jx",
    }
)


_PLACEHOLDER_ADDRESS = re.compile(r"(?i)\bany ?town\b|\bmuster(?:stadt|straße|strasse|str\.|dorf)")


def is_specimen(type_: str, value: str) -> bool:
    """True when `value`, found as `type_`, is a published test or documentation value."""
    if type_ == "EMAIL":
        return bool(_RESERVED_DOMAINS.search(value.strip()))
    if type_ == "STREET_ADDRESS":
        return bool(_PLACEHOLDER_ADDRESS.search(value))
    if type_ == "IP_ADDRESS":
        try:
            ip = ipaddress.ip_address(value.strip("[]"))
        except ValueError:
            return False
        return ip.is_loopback or ip.is_unspecified
    compact = re.sub(r"[\s-]", "", value)
    if type_ == "CREDIT_CARD":
        return compact in _TEST_CARDS
    if type_ == "US_SSN":
        return compact in _SPECIMEN_SSNS
    if type_ == "IBAN":
        return compact.upper() in _EXAMPLE_IBANS
    if type_ in ("API_KEY", "SECRET"):
        publishable = value.startswith(("pk_live_", "pk_test_"))
        return value in _DOC_KEYS or "EXAMPLE" in value or publishable
    return False
