"""Phone numbers as identity: the key a WhatsApp id and an account phone are compared on.

WhatsApp ids are E.164 digits without `+`. Account phones are whatever the customer typed
in the panel. Two real-world quirks make the naive comparison fail:

- Argentina: mobile numbers are dialled internationally as +54 9 <area> <number>, and
  WhatsApp ids carry that 9 (549111…), while account phones are often written
  without it (+54 11 …) or with the domestic 15 prefix (011 15 …).
- Mexico: until 2019 mobiles were dialled as +52 1 <10 digits>; WhatsApp ids of older
  accounts still carry the 1 while phones written today do not (or vice versa).

The key drops those mobile markers so both spellings meet.
"""

from __future__ import annotations

import phonenumbers

_ARGENTINA = 54
_MEXICO = 52


def parse_phone(raw: str, default_region: str = "AR") -> phonenumbers.PhoneNumber | None:
    """A phone written by a person. A number starting with `+` (or `00`) is read as
    international; anything else in `default_region`, the country most customers are in."""
    text = raw.strip()
    if not text:
        return None
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        return phonenumbers.parse(text, None if text.startswith("+") else default_region)
    except phonenumbers.NumberParseException:
        return None


def phone_key(raw: str, default_region: str = "AR") -> str | None:
    """The comparison key of a phone written by a person, or None if it is not a phone."""
    number = parse_phone(raw, default_region)
    if number is None:
        return None
    country_code = number.country_code or 0
    national = _without_mobile_marker(country_code, str(number.national_number))
    # Judged without the marker: Mexico's current numbering plan rejects the 1 that the
    # older "+52 1 55 …" spelling carries, yet that spelling is still in account phones.
    if not phonenumbers.is_possible_number(
        phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))
    ):
        return None
    return f"{country_code}{national}"


def wa_id_key(wa_id: str) -> str | None:
    """The comparison key of a WhatsApp id (E.164 digits, no `+`)."""
    digits = wa_id.strip().lstrip("+")
    if not digits.isdigit():
        return None
    try:
        number = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return None
    return _key(number.country_code or 0, str(number.national_number))


def whatsapp_id_for(phone: str, default_region: str = "AR") -> str | None:
    """The WhatsApp id a phone's owner writes from (the inverse of the key): Argentine
    ids carry the mobile 9 after 54 whether or not the account phone does, and Mexican
    ones the old mobile 1 after 52 (older accounts still have it)."""
    number = parse_phone(phone, default_region)
    if number is None:
        return None
    country = number.country_code or 0
    national = str(number.national_number)
    if country == _ARGENTINA and not (len(national) == 11 and national.startswith("9")):
        national = "9" + national
    elif country == _MEXICO and len(national) == 10:
        national = "1" + national
    wa_id = f"{country}{national}"
    key = phone_key(phone, default_region)
    return wa_id if key is not None and wa_id_key(wa_id) == key else None


def _key(country_code: int, national: str) -> str:
    return f"{country_code}{_without_mobile_marker(country_code, national)}"


def _without_mobile_marker(country_code: int, national: str) -> str:
    if (country_code == _ARGENTINA and len(national) == 11 and national.startswith("9")) or (
        country_code == _MEXICO and len(national) == 11 and national.startswith("1")
    ):
        return national[1:]
    return national
